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
# Channels a lane may have between assignment and their last weight's leaving: the jobs
# waiting and being read, and a few more in the decoder's buffer and the expander.
_ORDER_DEPTH = 16


class _S(enum.Enum, shape=3):
    IDLE = 0
    LO = 1  # read the size's low byte
    HI = 2  # read its high byte; the low byte arrives
    HI_WAIT = 3  # the high byte arrives
    PUSH = 4  # give the channel to a lane; read the next size's low byte


class StreamFetch(wiring.Component):
    """Deals a layer's channels to the decode lanes and feeds each lane its channels' bytes.

    Ports:
        ``start`` (in): one-cycle pulse; begins a layer whose ``out_c``, ``sizes_addr`` and
            ``streams_addr`` (byte addresses in the image buffer) are steady from then on.
        ``rd_addr`` (out), ``rd_data`` (in): a read port of the image buffer (word address;
            the word of ``image_word_bytes`` bytes arrives a clock later, byte ``a`` of the
            image at byte lane ``a mod W``).
        ``o[j]`` (out streams of bytes): lane ``j``'s channels' streams back to back.
        ``ch[j]`` (out streams of u16): the numbers of lane ``j``'s channels, in the order
            of its streams; the consumer takes one when the channel's last weight leaves.
        ``idle`` (out): every byte of the layer has been delivered (and before a start).

    A scheduler reads the stream sizes (a byte per read), keeps their running sum and
    gives each channel, as a job (start address, size), to the lane with the fewest bytes
    still to read among those with room (a FIFO of four jobs per lane besides the one
    being read, and sixteen channel numbers): dealing channels in turn left lanes idle
    that drew short ones (Ref: EIE, ISCA 2016, whose PEs balance load with activation
    queues; here the assignment balances it). The scheduler has the
    read port whenever it reads (three clocks a channel, two of them reading); otherwise
    the lanes take it in fixed turns (slot ``j`` for lane ``j``). A lane uses its turn when
    its byte queue (``3 W`` bytes) has room for a word and takes its channel's bytes from
    the word, so it gets up to ``W >= 2n`` bytes every ``n`` clocks, more than the byte a
    clock its decoder takes. Layers whose channels average fewer than about ``3n``
    symbols are limited by the scheduler.

    Latency: a lane's first byte is on ``o[j]`` about ``n + 5`` clocks after ``start``.
    Back-pressure: per lane; ``o[j].valid`` is a register.
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
            "ch": Out(stream.Signature(unsigned(16))).array(config.decode_lanes),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        lanes = cfg.decode_lanes
        wb = cfg.image_word_bytes
        ob = (wb - 1).bit_length()
        qb = 3 * wb  # queue bytes per lane
        aw = cfg.image_addr_width + 1

        # The scheduler reads whenever it asks (it asks only while a lane has room for a
        # job); otherwise the port goes to the lanes in turns: slot j serves lane j.
        slot = Signal(range(lanes))
        m.d.sync += slot.eq(Mux(slot == lanes - 1, 0, slot + 1))
        sc = lanes
        g_valid = Signal()  # a read was granted last clock ...
        g_slot = Signal(range(lanes + 1))  # ... to this client
        req = Signal(lanes + 1)
        req_addr = [Signal(aw, name=f"req_addr_{c}") for c in range(lanes + 1)]
        with m.If(req[sc]):
            m.d.comb += self.rd_addr.eq(req_addr[sc][ob:])
        with m.Else():
            with m.Switch(slot):
                for c in range(lanes):
                    with m.Case(c):
                        m.d.comb += self.rd_addr.eq(req_addr[c][ob:])
        m.d.sync += [g_valid.eq(req[sc] | req.bit_select(slot, 1)),
                     g_slot.eq(Mux(req[sc], sc, slot))]

        def granted(c):
            return req[c] if c == sc else req[c] & (slot == c) & ~req[sc]

        def arrived(c):
            return g_valid & (g_slot == c)

        # -- scheduler: three clocks a channel (the low byte's read, the high byte's read,
        # the size; the next low byte is read in the clock the job is pushed) ------------
        s_state = Signal(_S)
        s_c = Signal(16)  # channel
        s_addr = Signal(aw)  # its size's address
        s_start = Signal(aw + 1)  # its stream's address
        s_lo = Signal(8)
        s_size = Signal(16)
        s_off = Signal(max(1, ob))
        s_byte = Signal(8)
        m.d.comb += s_byte.eq(self.rd_data.word_select(s_off, 8) if ob else self.rd_data)
        m.d.sync += s_off.eq(req_addr[sc][:ob] if ob else 0)
        m.d.comb += req_addr[sc].eq(Mux(s_state == _S.HI, s_addr + 1,
                                        Mux(s_state == _S.PUSH, s_addr + 2, s_addr)))

        # Each lane's jobs wait in a FIFO, and the channel numbers of its jobs in another
        # (for the consumer, until the channel's last weight has left).
        jobs, orders = [], []
        for j in range(lanes):
            q = m.submodules[f"jobs_{j}"] = fifo.SyncFIFOBuffered(width=aw + 1 + 16,
                                                                  depth=_JOB_DEPTH)
            c = m.submodules[f"order_{j}"] = fifo.SyncFIFOBuffered(width=16,
                                                                   depth=_ORDER_DEPTH)
            m.d.comb += [
                q.w_data.eq(Cat(s_start, s_size)),
                c.w_data.eq(s_c),
                self.ch[j].valid.eq(c.r_rdy),
                self.ch[j].payload.eq(c.r_data),
                c.r_en.eq(self.ch[j].ready),
            ]
            jobs.append(q)
            orders.append(c)
        room = Signal(lanes)
        m.d.comb += room.eq(Cat(*(q.w_rdy & c.w_rdy for q, c in zip(jobs, orders,
                                                                       strict=True))))
        job_load = Signal(lanes)
        for j in range(lanes):
            m.d.comb += [jobs[j].w_en.eq(job_load[j]), orders[j].w_en.eq(job_load[j])]

        # The next channel goes to the lane with the fewest bytes still to read (among lanes
        # with room for a job), so lanes that drew short channels take more of them and all
        # finish together; channels are not dealt in turn.
        pend = [Signal(aw + 1, name=f"pend_{j}") for j in range(lanes)]
        pick = Signal(range(lanes))
        any_room = Signal()
        best, best_pend, found = Const(0, range(lanes)), Const(0, aw + 1), Const(0, 1)
        for j in range(lanes):
            take = room[j] & (~found | (pend[j] < best_pend))
            best = Mux(take, j, best)
            best_pend = Mux(take, pend[j], best_pend)
            found = found | room[j]
        m.d.comb += [pick.eq(best), any_room.eq(found)]

        s_more = Signal()
        m.d.comb += s_more.eq(s_c + 1 != self.out_c)
        with m.Switch(s_state):
            with m.Case(_S.LO):
                m.d.comb += req[sc].eq(1)
                m.d.sync += s_state.eq(_S.HI)
            with m.Case(_S.HI):
                m.d.comb += req[sc].eq(1)
                m.d.sync += [s_lo.eq(s_byte), s_state.eq(_S.HI_WAIT)]
            with m.Case(_S.HI_WAIT):
                m.d.sync += [s_size.eq(Cat(s_lo, s_byte)), s_state.eq(_S.PUSH)]
            with m.Case(_S.PUSH):
                with m.If(any_room):
                    m.d.comb += [job_load.eq(1 << pick), req[sc].eq(s_more)]
                    m.d.sync += [
                        s_start.eq(s_start + s_size),
                        s_c.eq(s_c + 1),
                        s_addr.eq(s_addr + 2),
                        s_state.eq(Mux(s_more, _S.HI, _S.IDLE)),
                    ]
        with m.If(self.start):
            m.d.sync += [
                s_state.eq(Mux(self.out_c == 0, _S.IDLE, _S.LO)),
                s_c.eq(0),
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
                # (with one lane, a word may still be arriving from the previous clock)
                req[j].eq(active & (qn + Mux(arrived(j), r_cnt, 0) <= qb - wb)),
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
            m.d.sync += pend[j].eq(pend[j] + Mux(job_load[j], s_size, 0)
                                   - Mux(granted(j), cnt, 0))

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
                m.d.sync += [f_addr.eq(0), f_end.eq(0), qn.eq(0), qd.eq(0), pend[j].eq(0)]
            lane_idle.append(~active & ~q.r_rdy & (qn == 0) & ~arrived(j))

        m.d.comb += self.idle.eq((s_state == _S.IDLE) & Cat(*lane_idle).all())
        return m
