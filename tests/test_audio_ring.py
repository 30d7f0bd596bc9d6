"""The SPSC ring: wrap-around, partial writes, underrun zero-fill and counting."""
import threading
import time

import numpy as np

from expotion_live.audio.ring_buffer import RingBuffer


def test_wraps_around_and_preserves_order():
    ring = RingBuffer(10)
    out = np.empty(4, np.float32)
    produced = np.arange(40, dtype=np.float32)
    got = []
    for start in range(0, 40, 4):
        assert ring.write(produced[start:start + 4]) == 4
        assert ring.read_into(out) == 4
        got.append(out.copy())
    np.testing.assert_array_equal(np.concatenate(got), produced)
    assert ring.underrun_blocks == 0


def test_write_stops_at_capacity():
    ring = RingBuffer(8)
    assert ring.write(np.ones(12, np.float32)) == 8
    assert ring.space() == 0 and ring.write(np.ones(1, np.float32)) == 0


def test_underrun_zero_fills_and_counts_only_after_first_sound():
    ring = RingBuffer(16)
    out = np.full(8, 7.0, np.float32)
    assert ring.read_into(out) == 0                    # pre-roll: silent, not an underrun
    assert not out.any() and ring.underrun_blocks == 0
    ring.write(np.ones(3, np.float32))
    out[:] = 7.0
    assert ring.read_into(out) == 3
    np.testing.assert_array_equal(out, [1, 1, 1, 0, 0, 0, 0, 0])
    assert ring.underrun_blocks == 1 and ring.underrun_samples == 5


def test_threaded_producer_consumer_loses_nothing():
    ring = RingBuffer(257)
    total = 20_000
    produced = np.arange(total, dtype=np.float32)
    received = np.empty(total, np.float32)

    def produce():
        done = 0
        while done < total:
            written = ring.write(produced[done:done + 100])
            done += written
            if not written:
                time.sleep(0)          # ring full: let the consumer run

    thread = threading.Thread(target=produce)
    thread.start()
    got = 0
    block = np.empty(64, np.float32)
    while got < total:
        n = min(ring.available(), 64)
        if n:
            ring.read_into(block[:n])
            received[got:got + n] = block[:n]
            got += n
        else:
            time.sleep(0)              # ring empty: let the producer run
    thread.join()
    np.testing.assert_array_equal(received, produced)
