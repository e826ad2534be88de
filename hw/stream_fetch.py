"""Per-lane stream fetch: each decode lane reads its channels' bytes from the image buffer.

Ref: docs/weight-image.md, "Stream sizes and streams": stream ``o`` starts where stream
``o - 1`` ended, the first right after the size list, so channel ``o``'s start is the
streams' start plus the prefix sum of the sizes before it.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFetch"]

_JOB_DEPTH = 4  # channels a lane may have waiting


class _S(enum.Enum, shape=3):
    IDLE = 0
    LO = 1
    LO_WAIT = 2
    HI = 3
    HI_WAIT = 4
    PUSH = 5


class StreamFetch(wiring.Component):
    """Feeds lane ``j`` (of ``decode_lanes``) the bytes of channels ``j, j + n, ...``.

    Ports:
        ``start`` (in): one-cycle pulse; begins a layer whose ``out_c``, ``sizes_addr`` and
            ``streams_addr`` (byte addresses in the image buffer) are steady from then on.
        ``rd_addr`` (out), ``rd_data`` (in): a read port of the image buffer (word address;
            the word of ``image_word_bytes`` bytes arrives a clock later, byte ``a`` of the
            image at byte lane ``a mod W``).
        ``o[j]`` (out streams of bytes): lane ``j``'s channels' streams back to back.
        ``idle`` (out): every byte of the layer has been delivered (and before a start).

    A scheduler reads the stream sizes (a byte per read), keeps their running sum and
    hands each channel to its lane as a job (start address, size); each lane has a FIFO of
    four jobs waiting besides the one being read. The read port is shared in fixed turns (lanes ``0..n-1``,
    then the scheduler): a lane uses its turn when its byte queue (``2 W`` bytes) has room
    for a word, and takes the bytes of its channel from the word read. A lane thus gets
    up to ``W ≥ 2n`` bytes every ``n + 1`` clocks, more than the byte a clock its decoder
    takes; the scheduler needs ``2 (n + 1) + 2`` clocks per channel, which limits layers
    whose channels are shorter than about ``2 n + 4`` bytes.

    Latency: a lane's first byte is on ``o[j]`` about ``3 (n + 1) + 3`` clocks after
    ``start``. Back-pressure: per lane; ``o[j].valid`` is a register.
    """

    def __init__(self, config):
        self._config = config
        aw = config.image_addr_width + 1
        super().__init__({
            "start": In(1),
            "out_c": In(unsigned(16)),
            "sizes_addr": In(unsigned(aw)),
            "streams_addr": In(unsigned(aw)),
            "rd_addr": Out(range(config.image_words)),
            "rd_data": In(8 * config.image_word_bytes),
            "o": Out(stream.Signature(unsigned(8))).array(config.decode_lanes),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        lanes = cfg.decode_lanes
        wb = cfg.image_word_bytes
        ob = (wb - 1).bit_length()
        qb = 2 * wb  # queue bytes per lane
        aw = cfg.image_addr_width + 1

        # Turns: slot s serves lane s, slot `lanes` the scheduler.
        slot = Signal(range(lanes + 1))
        m.d.sync += slot.eq(Mux(slot == lanes, 0, slot + 1))
        g_valid = Signal()  # a read was granted last clock ...
        g_slot = Signal.like(slot)  # ... to this client
        req = Signal(lanes + 1)
        req_addr = [Signal(aw, name=f"req_addr_{c}") for c in range(lanes + 1)]
        with m.Switch(slot):
            for c in range(lanes + 1):
                with m.Case(c):
                    m.d.comb += self.rd_addr.eq(req_addr[c][ob:])
        m.d.sync += [g_valid.eq(req.bit_select(slot, 1)), g_slot.eq(slot)]

        def granted(c):
            return req[c] & (slot == c)

        def arrived(c):
            return g_valid & (g_slot == c)

        # -- scheduler ---------------------------------------------------------------------
        sc = lanes
        s_state = Signal(_S)
        s_c = Signal(16)  # channel
        s_lane = Signal(range(lanes))
        s_addr = Signal(aw)  # its size's address
        s_start = Signal(aw + 1)  # its stream's address
        s_lo = Signal(8)
        s_size = Signal(16)
        s_off = Signal(max(1, ob))
        s_byte = Signal(8)
        m.d.comb += s_byte.eq(self.rd_data.word_select(s_off, 8) if ob else self.rd_data)
        m.d.sync += s_off.eq(req_addr[sc][:ob] if ob else 0)
        m.d.comb += req_addr[sc].eq(Mux(s_state == _S.HI, s_addr + 1, s_addr))

        # Each lane's jobs wait in a small FIFO, so a lane that runs through short channels
        # is not held up by the scheduler waiting for a lane busy with a long one.
        jobs = []
        for j in range(lanes):
            q = m.submodules[f"jobs_{j}"] = fifo.SyncFIFOBuffered(width=aw + 1 + 16,
                                                                  depth=_JOB_DEPTH)
            m.d.comb += q.w_data.eq(Cat(s_start, s_size))
            jobs.append(q)
        lane_free = Signal(lanes)
        m.d.comb += lane_free.eq(Cat(*(q.w_rdy for q in jobs)))
        job_load = Signal(lanes)
        for j, q in enumerate(jobs):
            m.d.comb += q.w_en.eq(job_load[j])

        with m.Switch(s_state):
            with m.Case(_S.LO):
                m.d.comb += req[sc].eq(1)
                with m.If(granted(sc)):
                    m.d.sync += s_state.eq(_S.LO_WAIT)
            with m.Case(_S.LO_WAIT):
                m.d.sync += [s_lo.eq(s_byte), s_state.eq(_S.HI)]
            with m.Case(_S.HI):
                m.d.comb += req[sc].eq(1)
                with m.If(granted(sc)):
                    m.d.sync += s_state.eq(_S.HI_WAIT)
            with m.Case(_S.HI_WAIT):
                m.d.sync += [s_size.eq(Cat(s_lo, s_byte)), s_state.eq(_S.PUSH)]
            with m.Case(_S.PUSH):
                with m.If(lane_free.bit_select(s_lane, 1)):
                    m.d.comb += job_load.eq(1 << s_lane)
                    m.d.sync += [
                        s_start.eq(s_start + s_size),
                        s_c.eq(s_c + 1),
                        s_addr.eq(s_addr + 2),
                        s_lane.eq(Mux(s_lane == lanes - 1, 0, s_lane + 1)),
                        s_state.eq(Mux(s_c + 1 == self.out_c, _S.IDLE, _S.LO)),
                    ]
        with m.If(self.start):
            m.d.sync += [
                s_state.eq(Mux(self.out_c == 0, _S.IDLE, _S.LO)),
                s_c.eq(0),
                s_lane.eq(0),
                s_addr.eq(self.sizes_addr),
                s_start.eq(self.streams_addr),
            ]

        # -- lanes -------------------------------------------------------------------------
        lane_idle = []
        for j in range(lanes):
            out = self.o[j]
            f_addr = Signal(aw + 1, name=f"f_addr_{j}")
            f_end = Signal(aw + 1, name=f"f_end_{j}")
            qd = Signal(8 * qb, name=f"queue_{j}")  # bytes above qn are zero
            qn = Signal(range(qb + 1), name=f"queue_n_{j}")
            r_off = Signal(max(1, ob), name=f"r_off_{j}")
            r_cnt = Signal(range(wb + 1), name=f"r_cnt_{j}")
            active = Signal(name=f"active_{j}")
            m.d.comb += active.eq(f_addr != f_end)

            q = jobs[j]
            job_start = q.r_data[:aw + 1]
            job_size = q.r_data[aw + 1:]

            # Request a word when the queue has room for all of it.
            off = f_addr[:ob] if ob else Const(0, 1)
            rest = Signal(aw + 1, name=f"rest_{j}")
            cnt = Signal(range(wb + 1), name=f"cnt_{j}")
            m.d.comb += [
                rest.eq(f_end - f_addr),
                cnt.eq(Mux(rest < wb - off, rest, wb - off)),
                req[j].eq(active & (qn <= qb - wb)),
                req_addr[j].eq(f_addr),
            ]
            # The next job starts in the clock the current one's last word is granted.
            next_job = [f_addr.eq(job_start), f_end.eq(job_start + job_size)]
            with m.If(granted(j)):
                m.d.sync += [f_addr.eq(f_addr + cnt), r_off.eq(off), r_cnt.eq(cnt)]
                with m.If((cnt == rest) & q.r_rdy):
                    m.d.sync += next_job
                    m.d.comb += q.r_en.eq(1)
            with m.Elif(~active & q.r_rdy):
                m.d.sync += next_job
                m.d.comb += q.r_en.eq(1)

            pop = Signal(name=f"pop_{j}")
            m.d.comb += [
                out.valid.eq(qn != 0),
                out.payload.eq(qd[:8]),
                pop.eq(out.valid & out.ready),
            ]
            shifted = Mux(pop, qd[8:], qd)
            kept = Signal(range(qb + 1), name=f"kept_{j}")
            m.d.comb += kept.eq(qn - pop)
            with m.If(arrived(j)):
                word = self.rd_data >> Cat(Const(0, 3), r_off)
                mask = Signal(8 * wb, name=f"mask_{j}")
                with m.Switch(r_cnt):
                    for n in range(wb + 1):
                        with m.Case(n):
                            m.d.comb += mask.eq((1 << (8 * n)) - 1)
                m.d.sync += [
                    qd.eq(shifted | ((word & mask) << Cat(Const(0, 3), kept))),
                    qn.eq(kept + r_cnt),
                ]
            with m.Else():
                m.d.sync += [qd.eq(shifted), qn.eq(kept)]
            with m.If(self.start):
                m.d.sync += [f_addr.eq(0), f_end.eq(0), qn.eq(0), qd.eq(0)]
            lane_idle.append(~active & ~q.r_rdy & (qn == 0) & ~arrived(j))

        m.d.comb += self.idle.eq((s_state == _S.IDLE) & Cat(*lane_idle).all())
        return m
