"""The app <-> worker wire format: round trips, and every malformed frame rejected with ProtocolError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litserve.core import protocol as P

KINDS = sorted(P.KINDS)


def test_header_is_version_then_kind():
    for kind in KINDS:
        assert P.header(kind) == bytes((P.VERSION, kind))
    assert len({P.header(k) for k in KINDS}) == len(KINDS)


def test_kinds_are_distinct_letters_and_terminal_kinds_are_result_and_end():
    letters = [
        *(P.REQUEST, P.CANCEL, P.STOP, P.REVOKE, P.PAUSE, P.RESUME),
        *(P.READY, P.FAILED, P.RESULT, P.CHUNK, P.END, P.LOG, P.REVOKED, P.HEARTBEAT),
    ]
    assert len(set(letters)) == len(letters) == len(P.KINDS)
    assert all(chr(k).isalpha() for k in letters)
    assert P.TERMINAL == {P.RESULT, P.END}


def test_round_trip_of_a_batch():
    frames = P.encode(P.REQUEST, [(1, 0, b'{"a":1}'), (2**64 - 1, 0, b""), (7, 0, b"\x00\xff")])
    assert len(frames) == 7
    kind, items = P.decode(frames)
    assert kind == P.REQUEST
    assert [(i.rid, i.status, i.payload, i.tag) for i in items] == [
        (1, 0, b'{"a":1}', b""),
        (2**64 - 1, 0, b"", b""),
        (7, 0, b"\x00\xff", b""),
    ]


def test_message_without_items():
    assert P.encode(P.STOP) == [P.header(P.STOP)]
    assert P.decode(P.encode(P.STOP)) == (P.STOP, [])


def test_item_head_carries_the_request_id_tag():
    frames = [P.header(P.REQUEST), P.item_head(42, 0, b"client-id-1"), b"{}"]
    kind, [item] = P.decode(frames)
    assert (kind, item.rid, item.status, item.tag, item.payload) == (P.REQUEST, 42, 0, b"client-id-1", b"{}")
    assert P.item_head(42) == struct.pack("!QH", 42, 0)
    assert len(P.item_head(1, 200, b"x" * P.MAX_TAG_BYTES)) == P.ITEM_SIZE + P.MAX_TAG_BYTES


@given(
    kind=st.sampled_from(KINDS),
    items=st.lists(
        st.tuples(
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**16 - 1),
            st.binary(max_size=64),
            st.binary(max_size=P.MAX_TAG_BYTES),
        ),
        max_size=8,
    ),
)
def test_round_trip_property(kind, items):
    frames = [P.header(kind)]
    for rid, status, payload, tag in items:
        frames += [P.item_head(rid, status, tag), payload]
    got_kind, got = P.decode(frames)
    assert got_kind == kind
    assert [(i.rid, i.status, i.payload, i.tag) for i in got] == items
    if not any(tag for *_, tag in items):
        assert P.encode(kind, [(r, s, p) for r, s, p, _ in items]) == frames


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "empty"),
        ([b""], "header must be 2 bytes"),
        ([b"\x01"], "header must be 2 bytes"),
        ([b"\x01RR"], "header must be 2 bytes"),
        ([bytes((2, P.REQUEST))], "version"),
        ([bytes((0, P.REQUEST))], "version"),
        ([bytes((P.VERSION, ord("Z")))], "unknown frame kind"),
        ([P.header(P.REQUEST), P.item_head(1)], "pairs"),
        ([P.header(P.REQUEST), P.item_head(1), b"x", P.item_head(2)], "pairs"),
        ([P.header(P.REQUEST), b"short", b"x"], "item head"),
        ([P.header(P.REQUEST), b"", b"x"], "item head"),
        ([P.header(P.REQUEST), P.item_head(1, 0, b"t" * (P.MAX_TAG_BYTES + 1)), b"x"], "item head"),
    ],
)
def test_malformed_messages_are_rejected(frames, reason):
    with pytest.raises(P.ProtocolError, match=reason):
        P.decode(frames)


@given(st.lists(st.binary(max_size=20), max_size=6))
def test_arbitrary_bytes_decode_or_raise_protocol_error(frames):
    try:
        kind, items = P.decode(frames)
    except P.ProtocolError:
        return
    assert kind in P.KINDS
    assert len(items) == (len(frames) - 1) // 2


def test_protocol_error_is_a_value_error():
    assert issubclass(P.ProtocolError, ValueError)


def test_split_batches_groups_consecutive_items_by_batch_number():
    def item(rid: int, batch: int) -> P.Item:
        return P.Item(rid, batch, b"")

    items = [item(1, 5), item(2, 5), item(3, 9), item(4, 5), item(5, 0)]
    assert [[i.rid for i in b] for b in P.split_batches(items)] == [[1, 2], [3], [4], [5]]
    assert P.split_batches([]) == []
    assert [[i.rid for i in b] for b in P.split_batches([item(1, 0)])] == [[1]]
