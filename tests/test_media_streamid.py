import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flumph.media.streamid import DEVICE_ID_RE, PublishRequest, parse_publish_streamid

ACCEPTED = [
    ("publish:cam1", "cam1", None),
    ("publish:0", "0", None),
    ("publish:" + "a" * 64, "a" * 64, None),
    ("publish:yard-cam-2:alice:secret", "yard-cam-2", "alice"),
    ("publish:cam1::", "cam1", None),
    ("#!::r=cam1,m=publish", "cam1", None),
    ("#!::m=publish,r=cam1", "cam1", None),
    ("#!::m=publish,u=bob,r=cam-9", "cam-9", "bob"),
    ("#!::r=cam1,m=publish,s=pass,t=stream", "cam1", None),
    ("#!::h=example,r=cam1,m=publish,u=", "cam1", None),
]

REJECTED = [
    ("", "stream id is empty"),
    ("read:cam1", "asks to read"),
    ("cam1", "is neither 'publish:<id>'"),
    ("publish:", "names no device id"),
    ("publish:Cam1", "device id 'Cam1' in stream id 'publish:Cam1' is invalid"),
    ("publish:-cam", "device id '-cam'"),
    ("publish:cam_1", "device id 'cam_1'"),
    ("publish:" + "a" * 65, "must match [a-z0-9][a-z0-9-]{0,63}"),
    ("publish:cam1:alice", "expected 'publish:<id>' or 'publish:<id>:<user>:<pass>'"),
    ("publish:cam1/x", "device id 'cam1/x'"),
    ("#!::r=cam1,m=request", "has mode m='request'"),
    ("#!::r=cam1", "has mode m='request'"),  # the SRT default mode is request
    ("#!::r=cam1,m=bidirectional", "m='bidirectional'"),
    ("#!::m=publish", "has no r=<device id>"),
    ("#!::r=,m=publish", "names no device id"),
    ("#!::r=CAM,m=publish", "device id 'CAM'"),
    ("#!::r=cam1,m=publish,r=cam2", "key 'r' appears twice"),
    ("#!::r=cam1,m=publish,bogus", "item 'bogus' is not key=value"),
    ("#!::r=cam1,=x,m=publish", "key '' is not a valid key"),
    ("#!::", "has no keys after '#!::'"),
    ("#!:{r=cam1}", "access-control syntax other than"),
]


@pytest.mark.parametrize(("text", "stream_id", "user"), ACCEPTED)
def test_accepted_stream_ids(text, stream_id, user):
    request = parse_publish_streamid(text)
    assert (request.stream_id, request.user) == (stream_id, user)


def test_dataclass_shape():
    assert parse_publish_streamid("publish:cam1") == PublishRequest(stream_id="cam1", user=None)


@pytest.mark.parametrize(("text", "message"), REJECTED)
def test_rejected_stream_ids(text, message):
    with pytest.raises(ValueError) as caught:
        parse_publish_streamid(text)
    assert message in str(caught.value)


def test_password_is_kept_but_never_printed():
    request = parse_publish_streamid("#!::r=cam1,m=publish,u=bob,s=hunter2")
    assert request.password == "hunter2"
    assert "hunter2" not in repr(request)
    assert parse_publish_streamid("publish:cam1:bob:hunter2").password == "hunter2"


def test_long_garbage_is_shortened_in_the_message():
    with pytest.raises(ValueError) as caught:
        parse_publish_streamid("x" * 500)
    assert len(str(caught.value)) < 200


def test_device_id_pattern():
    assert DEVICE_ID_RE.match("a")
    assert DEVICE_ID_RE.match("a" * 64)
    assert not DEVICE_ID_RE.match("a" * 65)
    assert not DEVICE_ID_RE.match("cam1\n")
    assert not DEVICE_ID_RE.match("")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.builds(lambda s: "publish:" + s, st.text()),
        st.builds(lambda s: "#!::" + s, st.text(alphabet="rmus=,publish:#!cam1-_ ", max_size=40)),
    )
)
def test_fuzz_only_value_errors(text):
    try:
        request = parse_publish_streamid(text)
    except ValueError:
        return
    assert DEVICE_ID_RE.match(request.stream_id)
