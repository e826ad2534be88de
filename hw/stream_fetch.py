"""Per-lane stream fetch: each decode lane reads its channels' bytes from the image buffer.

Ref: docs/weight-image.md, "Stream sizes and streams": stream ``o`` starts where stream
``o - 1`` ended, the first right after the size list, so channel ``o``'s start is the
streams' start plus the prefix sum of the sizes before it.
"""

import dataclasses

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFetch"]

_JOB_DEPTH = 4  # channels a lane may have waiting
# Channels a lane may have between assignment and their last weight's leaving: the jobs
# waiting and being read, and a few more in the decoder's buffer and the expander.
_ORDER_DEPTH = 16
_SLOTS = 4  # words a lane's byte queue holds


@dataclasses.dataclass(frozen=True)
class _Probe:
    """The deal as it happens, for tests (see ``StreamFetch``)."""

    deal: Signal
    lane: Signal
    room: Signal
    pend: list


class StreamFetch(wiring.Component):
    """Deals a layer's channels to the decode lanes and feeds each lane its channels' bytes.

    Ports:
        ``start`` (in): one-cycle pulse; begins a layer whose ``dense``, ``out_c``,
            ``sizes_addr``, ``streams_addr`` (byte addresses in the image buffer) and
            ``streams_bytes`` (the sum of the stream sizes) are steady from then on. With
            several lanes the sizes are read and ``streams_bytes`` is not used; one lane
            uses no size.
        ``dense`` (in): deal channel ``c`` to lane ``c mod n`` (``n`` lanes), in turn,
            rather than by load: the rule a convolution's weights need, so that the tile
            buffer wires each lane to only the columns its channels can reach
            (``hw.tile_buffer``).
        ``rd_addr`` (out), ``rd_data`` (in): a read port of the image buffer (word address;
            the word of ``image_word_bytes`` bytes arrives ``image_read_latency`` clocks
            later, byte ``a`` of the image at byte lane ``a mod W``).
        ``o[j]`` (out streams of bytes): lane ``j``'s channels' streams back to back.
        ``ch[j]`` (out streams of u16): the numbers of lane ``j``'s channels, in the order
            of its streams; the consumer takes one when the channel's last weight leaves.
        ``idle`` (out): every byte of the layer has been delivered (and before a start).

    The scheduler reads the stream sizes a word at a time (``W = image_word_bytes``
    bytes: ``W/2`` sizes) into a window of three words, keeps their running sum (each
    channel's start) and deals a channel a clock: as a job (start, size), to the lane with
    the fewest bytes left (dealt and not yet delivered on ``o[j]``) among those with
    room, the lowest such lane on a tie. With more than one lane that choice is a
    register: it is made from the lanes' bytes and room in the clock before the deal,
    leaving out the lane dealt to in that clock. A lane has room while fewer than ``2W`` of its
    bytes are left and its FIFOs (four jobs besides the one being read, sixteen channel
    numbers) have space, so a channel goes to the lane that will run dry first rather
    than being committed long before it is needed: dealing channels in turn left lanes
    idle that drew short ones (Ref: EIE, ISCA 2016, whose PEs balance load with
    activation queues; here the assignment balances it). With ``dense`` the deal is in
    turn instead: channel ``c`` goes to lane ``c mod n`` once that lane has room, and a
    lane has room while its FIFOs have space (its next channels are fixed, so they may be
    dealt ahead), the next lane a register as well. A size may straddle two words;
    the window's third word is read ahead so that a size a clock is always there.

    The single read port: the scheduler has it whenever it asks (once in ``W/2`` deals,
    after the three words it reads at a start); otherwise the lanes that ask share it in
    round-robin order. A lane asks when its queue (four words, each kept as it came with
    the place of its next byte: nothing is shifted) has a slot for the word, and takes its
    current channel's bytes from the word; when the channel's last word is
    granted it takes its next job (from its FIFO, or straight from the deal when the FIFO
    is empty), so a lane reads its channels back to back, and a job that continues the
    current one (the next channel, dealt to the same lane) joins it at once, so that the
    two share words.

    Throughput: a channel a clock from the scheduler; the lanes together up to ``W``
    bytes a clock (one word; less where a channel ends inside a word), each lane up to a
    word in ``n`` clocks when all ask (``W >= 2 n`` up to 16 bytes,
    ``AcceleratorConfig.image_word_bytes``: more than the byte a clock a decoder takes).
    With channels of 1 to 24 bytes and consumers taking 3 bytes in 4 clocks, lanes wait for
    bytes in 0.3 % of their clocks on five lanes with 16-byte words (``ulx3s-85f``), under
    3 % on two lanes with 4-byte words (``tests/test_hw_stream_fetch.py``), and, on ten
    lanes, 0.7 % with 32-byte words and 7.0 % with 16-byte ones; the fetch that read
    each size a byte at a time, three clocks a channel, starved eight lanes a third of the
    time.

    One lane (``decode_lanes`` 1, the ``icebreaker`` preset) needs none of that: its
    channels are all of the layer's, in order, and their streams lie back to back in the
    image, so its bytes are the ``streams_bytes`` bytes from ``streams_addr`` and its
    channel numbers count from 0 to ``out_c - 1``; there is no scheduler, no job and no
    size read, and the queue holds two words. It delivers a byte a clock from the third
    clock after ``start`` (two clocks for the first word, one more with an
    ``image_read_latency`` of 2; then a word is asked for as soon as a slot is free and
    arrives before the other slot's ``W >= 4`` bytes are out). It may read up to two words
    past the streams (the image buffer's contents, never delivered).
    ``probe`` is ``None``.

    Latency: the first deal comes 4 clocks after ``start`` (5 when the first size
    straddles two words); when the first ``n`` channels go one a lane (channels of at
    least ``2W`` bytes), lane ``j``'s first byte is on ``o[j]`` ``8 + j`` clocks after
    ``start``. A channel dealt to an idle lane has its first byte out 4 clocks after the
    deal when the port is free. (With several lanes the granted address is registered
    before it reaches the buffer, so a word arrives two clocks after its grant. With an
    ``image_read_latency`` of 2 the buffer registers it again, so a word arrives three
    clocks after its grant, the first deal 5 clocks after ``start`` and lane ``j``'s first
    byte ``10 + j``; the lanes starve no more for it: 0.25 % of their clocks in the
    short-channel case above.)
    Back-pressure: per lane; ``o[j].valid`` is a register, the payload held until taken,
    and a stalled lane only stops asking for words. ``ch[j]`` comes from a FIFO.

    ``probe`` (for tests): ``deal`` (a channel is dealt this clock), ``lane`` (to which
    lane; chosen in the clock before with more than one lane), ``room`` (a bit a lane) and
    ``pend[j]`` (lane ``j``'s bytes left).
    """

    def __init__(self, config):
        self._config = config
        aw = config.image_addr_width + 1
        super().__init__({
            "start": In(1),
            "dense": In(1),
            "out_c": In(unsigned(16)),
            "sizes_addr": In(unsigned(aw)),
            "streams_addr": In(unsigned(aw)),
            "streams_bytes": In(unsigned(aw)),
            "rd_addr": Out(range(config.image_words)),
            "rd_data": In(8 * config.image_word_bytes),
            "o": Out(stream.Signature(unsigned(8))).array(config.decode_lanes),
            "ch": Out(stream.Signature(unsigned(16))).array(config.decode_lanes),
            "idle": Out(1),
        })
        lanes = config.decode_lanes
        self.probe = None if lanes == 1 else _Probe(
            deal=Signal(), lane=Signal(range(lanes)), room=Signal(lanes),
            pend=[Signal(aw + 1, name=f"pend_{j}") for j in range(lanes)])

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        lanes = cfg.decode_lanes
        if lanes == 1:
            self._one_lane(m)
            return m
        wb = cfg.image_word_bytes
        ob = (wb - 1).bit_length()
        aw = cfg.image_addr_width + 1

        # The read port: the scheduler's whenever it asks (at most one clock in W/2 once
        # its window is full); otherwise the requesting lane that comes first from ``rr``
        # on, which then moves past it (round robin, so a lane waits at most n - 1 grants
        # and no turn is wasted on a lane that does not ask).
        sc = lanes
        req = Signal(lanes + 1)
        req_addr = [Signal(aw, name=f"req_addr_{c}") for c in range(lanes + 1)]
        rr = Signal(range(lanes))
        gnt = Signal(lanes + 1)  # one-hot
        g_lane = Signal(range(lanes))
        lreq = req[:lanes]
        first = Const(0, range(lanes))
        for j in reversed(range(lanes)):  # the lowest requesting lane at or after rr ...
            first = Mux(lreq[j] & (j >= rr), j, first)
        any_hi = (lreq & ~((1 << rr) - 1)[:lanes]).any() if lanes > 1 else lreq[0]
        wrap = Const(0, range(lanes))
        for j in reversed(range(lanes)):  # ... or else the lowest requesting lane
            wrap = Mux(lreq[j], j, wrap)
        m.d.comb += g_lane.eq(Mux(any_hi, first, wrap))
        with m.If(req[sc]):
            m.d.comb += gnt.eq(1 << sc)
        with m.Elif(lreq.any()):
            m.d.comb += gnt.eq(1 << g_lane)
            m.d.sync += rr.eq(Mux(g_lane == lanes - 1, 0, g_lane + 1))
        addr = Const(0, aw)
        for c in range(lanes + 1):
            addr = addr | Mux(gnt[c], req_addr[c], 0)
        # The granted address is registered before it leaves for the image buffer: the
        # arbitration and the route to the buffer's block RAMs (spread over the device)
        # in one clock were the whole ULX3S design's critical path (30 ns, 11 of them the
        # route). So a word granted in clock t is read in t + 1 and arrives in t + 2.
        # With an ``image_read_latency`` of 2 the buffer registers the address again (its
        # inputs, before its block RAMs), so the word arrives in t + 3: one more stage of
        # "granted, on its way" (``h_valid``).
        lx = cfg.image_read_latency - 1
        i_addr = Signal(aw - ob)
        i_valid = Signal()  # a read was granted last clock (it is being read now) ...
        i_slot = Signal(range(lanes + 1))  # ... to this client
        g_valid = Signal()  # a read was granted two clocks ago (its word is here) ...
        g_slot = Signal(range(lanes + 1))  # ... to this client
        stages = [i_addr.eq(addr[ob:]), i_valid.eq(gnt.any()),
                  i_slot.eq(Mux(req[sc], sc, g_lane))]
        cleared = [i_valid]  # (at a start: no word read for the last layer arrives in this one)
        if lx:
            h_valid = Signal()  # (latency 2: granted two clocks ago, in the buffer's register)
            h_slot = Signal(range(lanes + 1))
            stages += [h_valid.eq(i_valid), h_slot.eq(i_slot),
                       g_valid.eq(h_valid), g_slot.eq(h_slot)]
            cleared.append(h_valid)
        else:
            stages += [g_valid.eq(i_valid), g_slot.eq(i_slot)]
        cleared.append(g_valid)
        m.d.sync += stages
        m.d.comb += self.rd_addr.eq(i_addr)
        with m.If(self.start):
            m.d.sync += [v.eq(0) for v in cleared]

        def granted(c):
            return gnt[c]

        def arrived(c):
            return g_valid & (g_slot == c)

        def in_flight(c):
            """Words granted to ``c`` that have not arrived yet (0 to 2; to 3 with an
            ``image_read_latency`` of 2)."""
            if lx:
                return (i_valid & (i_slot == c)) + (h_valid & (h_slot == c)) + arrived(c)
            return (i_valid & (i_slot == c)) + arrived(c)

        # -- scheduler: the stream sizes come a word at a time into a window of three
        # words; a size is taken from the window's first two (it may straddle them) and
        # its channel dealt in the same clock, a channel a clock -------------------------
        s_busy = Signal()  # channels left to deal
        s_c = Signal(16)  # the next channel
        s_start = Signal(aw + 1)  # its stream's address
        z_ptr = Signal(aw + 1)  # its size's address
        z_rd = Signal(aw + 2 - ob)  # the next word of sizes to read
        z_last = Signal(aw + 2 - ob)  # the word holding the last size's high byte
        win = [Signal(8 * wb, name=f"win_{k}") for k in range(3)]
        win_n = Signal(range(4))  # words in the window
        # ``z_rd <= z_last`` (words of sizes left to read), a register stepped with
        # ``z_rd``: the scheduler's request comes first in the arbitration, so its
        # comparison began the paths through every lane's grant into its job FIFO (the
        # fetch's longest on the ULX3S, 17.9 ns into ``jobs_4``'s level, session 24).
        z_more = Signal()
        m.d.comb += [
            req[sc].eq(s_busy & z_more & (win_n + in_flight(sc) < 3)),
            req_addr[sc].eq(Cat(Const(0, ob), z_rd) if ob else z_rd),
        ]
        z_off = z_ptr[:ob] if ob else Const(0, 1)
        s_size = Signal(16)
        m.d.comb += s_size.eq(Cat(win[0], win[1]).bit_select(Cat(Const(0, 3), z_off), 16))
        s_have = Signal()  # the size is in the window
        m.d.comb += s_have.eq(win_n > (z_off == wb - 1))
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
        room = self.probe.room
        pend = self.probe.pend
        # (dense: a lane's next channel is known, so it may be dealt as far ahead as the
        # lane's FIFOs allow)
        m.d.comb += room.eq(Cat(*(q.w_rdy & c.w_rdy & (self.dense | (pend[j] < 2 * wb))
                                  for j, (q, c) in enumerate(zip(jobs, orders, strict=True)))))
        job_load = Signal(lanes)
        for j in range(lanes):
            m.d.comb += orders[j].w_en.eq(job_load[j])

        # The next channel goes to the lane with the fewest bytes left (among lanes with
        # room), so lanes that drew short channels take more of them and all finish
        # together; channels are not dealt in turn.
        pick = self.probe.lane
        any_room = Signal()
        s_deal = self.probe.deal
        # A tree of comparisons (a lane without room counts as the fullest; ties go to
        # the lower lane): log2(n) comparators deep, as the deal repeats every clock.
        # A lane with room has fewer than 2W bytes left, so only pend's low bits are
        # compared (short comparators: this tree was the block's critical path).
        pw = (2 * wb - 1).bit_length()
        if lanes > 1:
            # The tree's answer is registered, for the next clock's deal: the tree and
            # the deal it steers (a lane's FIFO writes, its job taken at once) in one
            # clock were this block's critical path, 26.5 ns at ten lanes (about three
            # quarters of it routing). So the tree sees each lane's room and bytes as
            # they are in the clock before its deal, and leaves out the lane being dealt
            # to in that clock: that lane's room may be used up by this deal, while the
            # others' only grows (their bytes leave, their FIFOs drain).
            dealt = Mux(s_deal, 1 << pick, 0)
            ok = [room[j] & ~dealt[j] for j in range(lanes)]
        else:
            ok = [room[0]]
        cands = [(ok[j], pend[j][:pw], Const(j, range(lanes))) for j in range(lanes)]
        while len(cands) > 1:
            nxt = []
            for a, b in zip(cands[0::2], cands[1::2], strict=False):
                take_b = b[0] & (~a[0] | (b[1] < a[1]))
                nxt.append((a[0] | b[0], Mux(take_b, b[1], a[1]), Mux(take_b, b[2], a[2])))
            if len(cands) % 2:
                nxt.append(cands[-1])
            cands = nxt
        if lanes > 1:
            # Dense: channels go to the lanes in turn, channel c to lane c mod n; the
            # lane after this clock's (or this clock's lane again when nothing is dealt)
            # is never the lane dealt to now, so its room is as it will be.
            turn = Signal(range(lanes))
            m.d.comb += turn.eq(Mux(s_deal, Mux(pick == lanes - 1, 0, pick + 1), pick))
            with m.If(self.dense):
                m.d.sync += [any_room.eq(room.bit_select(turn, 1)), pick.eq(turn)]
            with m.Else():
                m.d.sync += [any_room.eq(cands[0][0]), pick.eq(cands[0][2])]
        else:
            # (one lane: no tree; its room is read in the clock it is dealt to)
            m.d.comb += [any_room.eq(cands[0][0]), pick.eq(0)]

        s_cross = Signal()  # the next size starts in the next word
        m.d.comb += [
            s_deal.eq(s_busy & s_have & any_room),
            s_cross.eq(s_deal & (z_off >= wb - 2)),
            job_load.eq(Mux(s_deal, 1 << pick, 0)),
        ]
        with m.If(s_deal):
            m.d.sync += [
                s_start.eq(s_start + s_size),
                s_c.eq(s_c + 1),
                z_ptr.eq(z_ptr + 2),
            ]
            with m.If(s_c + 1 == self.out_c):
                m.d.sync += s_busy.eq(0)
        # The window drops its first word when the next size starts past it, and a word
        # that arrives takes the first free place.
        kept_n = Signal(range(4))
        m.d.comb += kept_n.eq(win_n - s_cross)
        for k in range(3):
            with m.If(arrived(sc) & (kept_n == k)):
                m.d.sync += win[k].eq(self.rd_data)
            if k < 2:
                with m.Elif(s_cross):
                    m.d.sync += win[k].eq(win[k + 1])
        m.d.sync += win_n.eq(kept_n + arrived(sc))
        with m.If(req[sc]):
            m.d.sync += [z_rd.eq(z_rd + 1), z_more.eq(z_rd + 1 <= z_last)]
        last = self.sizes_addr + 2 * self.out_c - 1
        # (the first and last words of sizes as the registers take them)
        first_rd = Signal.like(z_rd, name="first_rd")
        last_rd = Signal.like(z_last, name="last_rd")
        m.d.comb += [first_rd.eq(self.sizes_addr[ob:] if ob else self.sizes_addr),
                     last_rd.eq(last[ob:] if ob else last)]
        with m.If(self.start):
            m.d.sync += [
                s_busy.eq(self.out_c != 0),
                s_c.eq(0),
                s_start.eq(self.streams_addr),
                z_ptr.eq(self.sizes_addr),
                z_rd.eq(first_rd),
                z_last.eq(last_rd),
                z_more.eq(first_rd <= last_rd),
                win_n.eq(0),
            ]
            if lanes > 1:
                m.d.sync += [pick.eq(0), any_room.eq(0)]

        # -- lanes -------------------------------------------------------------------------
        lane_idle = []
        for j in range(lanes):
            out = self.o[j]
            f_addr = Signal(aw + 1, name=f"f_addr_{j}")
            f_end = Signal(aw + 1, name=f"f_end_{j}")
            # The word of the job's last byte (that of ``f_end - 1``), kept with ``f_end``:
            # "the granted word is the job's last" is then one equality with ``f_addr``'s
            # word, not the byte count's subtraction, minimum and comparison, which began
            # the paths through ``take`` into the job FIFOs (18.3 ns on the ULX3S, session
            # 26). (It is read only while the lane is active, when ``f_end > f_addr``.)
            f_last = Signal(aw + 1 - ob, name=f"f_last_{j}")
            # The lane's queue: up to ``_SLOTS`` words as they came, each with the place of
            # its next byte and the end of its bytes (no byte is ever shifted: a byte queue
            # shifted by a variable count was most of this block's logic on eight lanes).
            e_data = [Signal(8 * wb, name=f"q{j}_data{k}") for k in range(_SLOTS)]
            e_pos = [Signal(range(wb), name=f"q{j}_pos{k}") for k in range(_SLOTS)]
            e_end = [Signal(range(wb + 1), name=f"q{j}_end{k}") for k in range(_SLOTS)]
            head = Signal(range(_SLOTS), name=f"q{j}_head")
            tail = Signal(range(_SLOTS), name=f"q{j}_tail")
            used = Signal(range(_SLOTS + 1), name=f"q{j}_used")
            r_off = Signal(max(1, ob), name=f"r_off_{j}")
            r_cnt = Signal(range(wb + 1), name=f"r_cnt_{j}")
            # ``f_addr != f_end`` (bytes left to ask for), kept as a register: the
            # comparison began the paths through the request, the grant and ``take`` into
            # the other lanes' ``f_last`` (20.1 ns on the ULX3S, session 32).
            active = Signal(name=f"active_{j}")

            # A lane takes its next job in the clock its current one's last word is granted
            # (or at once when it has none), from its FIFO or, when that is empty, straight
            # from the deal. A job that continues the current one (the next channel, dealt
            # to the same lane) is merged into it at once, so that they share words.
            q = jobs[j]
            direct = Signal(name=f"direct_{j}")
            take = Signal(name=f"take_{j}")
            merge = Signal(name=f"merge_{j}")
            job_start = Mux(q.r_rdy, q.r_data[:aw + 1], s_start)
            job_size = Mux(q.r_rdy, q.r_data[aw + 1:], s_size)
            m.d.comb += [
                jobs[j].w_en.eq(job_load[j] & ~direct),
                direct.eq((take | merge) & ~q.r_rdy & job_load[j] & (q.level == 0)),
                q.r_en.eq((take | merge) & q.r_rdy),
            ]

            # Request a word when the queue has a slot for it.
            off = f_addr[:ob] if ob else Const(0, 1)
            rest = Signal(aw + 1, name=f"rest_{j}")
            cnt = Signal(range(wb + 1), name=f"cnt_{j}")
            m.d.comb += [
                rest.eq(f_end - f_addr),
                cnt.eq(Mux(rest < wb - off, rest, wb - off)),
                # (the words granted in the last two clocks, three with a latency of 2,
                # are on their way)
                req[j].eq(active & (used + in_flight(j) < _SLOTS)),
                req_addr[j].eq(f_addr),
                # (``cnt == rest``: the rest ends in this word)
                take.eq(~active | (granted(j) & (f_last == (f_addr[ob:] if ob else f_addr)))),
                merge.eq(~take & (job_start == f_end)),
            ]
            # Where the granted word's bytes lie, kept until it arrives (a lane may be
            # granted in two clocks running, so two stages; three with an
            # ``image_read_latency`` of 2).
            a_off = Signal.like(r_off, name=f"a_off_{j}")
            a_cnt = Signal.like(r_cnt, name=f"a_cnt_{j}")
            m.d.sync += [a_off.eq(r_off), a_cnt.eq(r_cnt)]
            if lx:
                b_off = Signal.like(r_off, name=f"b_off_{j}")
                b_cnt = Signal.like(r_cnt, name=f"b_cnt_{j}")
                m.d.sync += [b_off.eq(a_off), b_cnt.eq(a_cnt)]
                a_off, a_cnt = b_off, b_cnt
            with m.If(granted(j)):
                m.d.sync += [f_addr.eq(f_addr + cnt), r_off.eq(off), r_cnt.eq(cnt)]
                with m.If(take):  # the job's last word: its bytes are all asked for
                    m.d.sync += active.eq(0)
            with m.If((take | merge) & (q.r_rdy | direct)):
                m.d.sync += [f_end.eq(job_start + job_size),
                             f_last.eq((job_start + job_size - 1)[ob:aw + 1])]
                with m.If(take):
                    m.d.sync += [f_addr.eq(job_start), active.eq(job_size != 0)]
                with m.Else():  # merged: bytes were left, and now more are
                    m.d.sync += active.eq(1)

            pop = Signal(name=f"pop_{j}")
            h_byte = Signal(8, name=f"q{j}_h_byte")
            h_pos = Signal(range(wb), name=f"q{j}_h_pos")
            h_end = Signal(range(wb + 1), name=f"q{j}_h_end")
            # Each slot picks its next byte, then the head slot's is taken: a byte-wide
            # multiplexer after the slots rather than a word-wide one before the byte pick.
            with m.Switch(head):
                for k in range(_SLOTS):
                    with m.Case(k):
                        m.d.comb += [h_byte.eq(e_data[k].word_select(e_pos[k], 8)),
                                     h_pos.eq(e_pos[k]), h_end.eq(e_end[k])]
            h_last = Signal(name=f"q{j}_h_last")  # the head word's last byte
            m.d.comb += [
                out.valid.eq(used != 0),
                out.payload.eq(h_byte),
                pop.eq(out.valid & out.ready),
                h_last.eq(h_pos + 1 == h_end),
            ]
            m.d.sync += pend[j].eq(pend[j] + Mux(job_load[j], s_size, 0) - pop)
            with m.If(pop):
                with m.Switch(head):
                    for k in range(_SLOTS):
                        with m.Case(k):
                            m.d.sync += e_pos[k].eq(h_pos + 1)
                with m.If(h_last):
                    m.d.sync += head.eq(Mux(head == _SLOTS - 1, 0, head + 1))
            with m.If(arrived(j)):
                with m.Switch(tail):
                    for k in range(_SLOTS):
                        with m.Case(k):
                            m.d.sync += [e_data[k].eq(self.rd_data), e_pos[k].eq(a_off),
                                         e_end[k].eq(a_off + a_cnt)]
                m.d.sync += tail.eq(Mux(tail == _SLOTS - 1, 0, tail + 1))
            m.d.sync += used.eq(used + arrived(j) - (pop & h_last))
            with m.If(self.start):
                m.d.sync += [f_addr.eq(0), f_end.eq(0), active.eq(0), head.eq(0), tail.eq(0),
                             used.eq(0), pend[j].eq(0)]
            lane_idle.append(~active & (q.level == 0) & (used == 0) & (in_flight(j) == 0))

        m.d.comb += self.idle.eq(~s_busy & Cat(*lane_idle).all())
        return m

    def _one_lane(self, m):
        """The one-lane fetch: a byte counter, a word address and a queue of two words."""
        cfg = self._config
        wb = cfg.image_word_bytes
        ob = (wb - 1).bit_length()  # >= 2: words of at least 4 bytes
        aw = cfg.image_addr_width + 1
        out, ch = self.o[0], self.ch[0]

        left = Signal(aw)  # bytes still to deliver
        w_addr = Signal(aw - ob)  # the next word to read
        data = [Signal(8 * wb, name=f"q_data{k}") for k in range(2)]
        head = Signal()  # the slot whose bytes go out
        tail = Signal()  # the slot the next word goes to
        used = Signal(range(3))
        pos = Signal(ob)  # the head word's next byte
        arrived = Signal()  # the word asked for last clock is on rd_data
        req = Signal()
        pop = Signal()
        asked = None  # (a latency of 2: the word asked for last clock is on its way)
        on_way = arrived  # words asked for and not yet in the queue
        if cfg.image_read_latency == 2:
            asked = Signal()
            m.d.sync += asked.eq(req)
            with m.If(self.start):
                m.d.sync += asked.eq(0)
            on_way = asked + arrived
        m.d.comb += [
            self.rd_addr.eq(w_addr),
            req.eq((left != 0) & (used + on_way < 2)),
            out.valid.eq((used != 0) & (left != 0)),
            out.payload.eq(Mux(head, data[1], data[0]).word_select(pos, 8)),
            pop.eq(out.valid & out.ready),
            self.idle.eq(left == 0),
        ]
        m.d.sync += arrived.eq(asked if asked is not None else req)
        with m.If(req):
            m.d.sync += w_addr.eq(w_addr + 1)
        with m.If(arrived):
            for k in range(2):
                with m.If(tail == k):
                    m.d.sync += data[k].eq(self.rd_data)
            m.d.sync += tail.eq(~tail)
        word_done = pop & (pos == wb - 1)
        with m.If(pop):
            m.d.sync += [left.eq(left - 1), pos.eq(pos + 1)]
        with m.If(word_done):
            m.d.sync += head.eq(~head)
        m.d.sync += used.eq(used + arrived - word_done)

        # Channel numbers: 0 .. out_c - 1, one taken as each channel's last weight leaves.
        c_next = Signal(16)
        running = Signal()
        m.d.comb += [ch.valid.eq(running & (c_next != self.out_c)), ch.payload.eq(c_next)]
        with m.If(ch.valid & ch.ready):
            m.d.sync += c_next.eq(c_next + 1)

        with m.If(self.start):
            m.d.sync += [
                left.eq(self.streams_bytes),
                w_addr.eq(self.streams_addr[ob:]),
                pos.eq(self.streams_addr[:ob]),
                head.eq(0), tail.eq(0), used.eq(0), arrived.eq(0),
                c_next.eq(0), running.eq(1),
            ]
