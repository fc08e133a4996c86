"""FrameDecoder as a state machine: any interleaving of queued frames and feeds of
any length gives back exactly the frames sent, in order, and nothing else.

The model is the byte stream itself: the frames packed so far (by the
pure-Python reference, not by rframe), where each one ends in the stream, and how
many bytes of the stream were fed. From that alone it knows which frames must
have come out, how many bytes the decoder holds (``pending``), how many it still
needs for its next step (``needed``), and whether ``close()`` must raise.

Errors (lengths over the limit, bad JSON) are not modelled: they poison the
decoder, as tests/test_decoder.py and tests/test_errors.py check.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import reference as ref
import rframe
from strategies import bodies, headers_unique, same_json

CODECS = [
    {},
    {"byteorder": "big"},
    {"json_header": False},
    {"json_header": False, "byteorder": "big"},
    {"checksum": "sha256"},
]

# What a chunk arrives as: recv() gives bytes, recv_into a bytearray or a view of one.
CHUNK_TYPES = [bytes, bytearray, memoryview]


class DecoderMachine(RuleBasedStateMachine):
    @initialize(config=st.sampled_from(CODECS))
    def start(self, config):
        self.config = config
        self.ref = ref.Codec(**config)
        self.new_stream()

    def new_stream(self):
        self.decoder = rframe.FrameDecoder(rframe.Codec(**self.config))
        self.stream = bytearray()  # every byte packed so far
        self.fed = 0  # how many of them were fed
        self.frames = []  # (header, body, parts): where its prefix, header (JSON only) and body end
        self.returned = 0  # how many frames came out

    # ------------------------------------------------------------------ rules

    @rule(header=headers_unique, body=bodies)
    def queue_frame(self, header, body):
        start = len(self.stream)
        if self.ref.json_header:
            head = self.ref.header_bytes(body, header)
            expected = json.loads(head)
            parts = (start + 4, start + 4 + len(head), start + 4 + len(head) + len(body))
        else:
            expected = {}
            parts = (start + 4, start + 4 + len(body))
        self.stream += self.ref.pack(body, header)
        assert len(self.stream) == parts[-1]
        self.frames.append((expected, body, parts))

    @rule(
        size=st.integers(min_value=0, max_value=8) | st.integers(min_value=0, max_value=700),
        chunk_type=st.sampled_from(CHUNK_TYPES),
    )
    def feed_some(self, size, chunk_type):
        """An arbitrary-length prefix of what is not yet fed (possibly empty)."""
        self.feed(min(size, len(self.stream) - self.fed), chunk_type)

    @rule(nth=st.integers(min_value=0, max_value=3), off=st.integers(min_value=-2, max_value=2))
    def feed_near_a_boundary(self, nth, off):
        """Up to just before, at or just after the end of a coming prefix,
        header or body: where a decoder changes state."""
        ends = sorted({end for *_, parts in self.frames for end in parts if end > self.fed})
        if ends:
            target = ends[min(nth, len(ends) - 1)] + off
            self.feed(max(0, min(target, len(self.stream)) - self.fed), bytes)

    @rule()
    def feed_all(self):
        self.feed(len(self.stream) - self.fed, bytes)

    @rule()
    def close(self):
        """The end of the stream: an error exactly when a frame was started and
        not finished; after that error the decoder refuses any more input."""
        partial = self.held() > 0
        if partial:
            with pytest.raises(rframe.IncompleteFrame) as info:
                self.decoder.close()
            assert info.value.received < info.value.expected
            with pytest.raises(rframe.IncompleteFrame):
                self.decoder.feed(b"")
        else:
            assert self.decoder.close() is None
        self.new_stream()

    # ------------------------------------------------------------------ the model

    def feed(self, size, chunk_type):
        chunk = chunk_type(bytes(self.stream[self.fed : self.fed + size]))
        self.fed += size
        got = self.decoder.feed(chunk)
        complete = [f for f in self.frames if f[2][-1] <= self.fed]
        expected = complete[self.returned :]
        assert len(got) == len(expected), (got, expected)
        for frame, (header, body, _) in zip(got, expected):
            assert isinstance(frame, rframe.Frame)
            assert same_json(frame.header, header), (frame.header, header)
            assert type(frame.body) is bytes and frame.body == body
        self.returned = len(complete)

    def frame_start(self) -> int:
        """Where the first frame not yet returned starts in the stream."""
        return self.frames[self.returned - 1][2][-1] if self.returned else 0

    def held(self) -> int:
        return self.fed - self.frame_start()

    @invariant()
    def pending_is_the_bytes_held(self):
        assert self.decoder.pending == self.held()

    @invariant()
    def needed_is_the_rest_of_the_current_part(self):
        start = self.frame_start()
        if self.returned == len(self.frames) or self.fed == start:
            want = start + 4  # the next length prefix
        else:
            # The end of the part (prefix, header, body) the fed bytes stop in.
            want = next(end for end in self.frames[self.returned][2] if end > self.fed)
        assert self.decoder.needed == want - self.fed


DecoderMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_frame_decoder_state_machine = DecoderMachine.TestCase
