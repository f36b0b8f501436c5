# cython: language_level=3, annotation_typing=False
"""The signed trigger's path through the HTTP API, compiled twin of ``_trigger_py``.

The same code as the pure twin (see its docstring), run without the interpreter:
typed locals, C calls to the builtins, no frame per step.
"""

import hashlib

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset

import orjson

from soketi_impl.twins._query_c import sdk_query  # (here too: the twins have the same names)

from soketi_impl.http.errors import ApiError, echo, error_response
from soketi_impl.http.types import HttpResponse
from soketi_impl.pusher.state import is_socket_id
from soketi_impl.signing import API_MAX_SKEW_S
from soketi_impl.twins._fanout_c cimport ChannelTable, Sink, Stats
from soketi_impl.twins._query_c cimport sdk_query as _sdk_query
from soketi_impl.twins._protocol_c cimport (
    KIND_ENCRYPTED,
    channel_kind,
    encode_event,
    is_cache_channel,
    valid_channel_name,
)

__all__ = [
    "TRIGGER_INFO", "EventRequest", "TriggerPath", "hmac_sha256", "md5_hex", "parse_event", "parse_info",
    "sdk_query",
]

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    object PyBytes_FromStringAndSize(const char* v, Py_ssize_t n)
    object PyUnicode_FromStringAndSize(const char* v, Py_ssize_t n)
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

cdef Py_ssize_t _MAX_STAMP_DIGITS = 12  # as signing.check_api_head
cdef Py_ssize_t _MAX_KEYS = 4096  # HMAC key states kept by one TriggerPath
cdef enum:
    _SIGNED_MAX = 2048  # the signed text built in place up to this size (else as a bytes object)
cdef double _MAX_SKEW = API_MAX_SKEW_S
cdef str _EVENTS_WHAT = "events (one per channel)"  # as events._take_events
cdef object _loads = orjson.loads
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef tuple _ANY_ORIGIN = ("Access-Control-Allow-Origin", "*")  # as http.cors
cdef object _new_response = HttpResponse.__new__

TRIGGER_INFO = frozenset({"subscription_count", "user_count"})
cdef frozenset _TRIGGER_INFO = TRIGGER_INFO
cdef frozenset _NO_INFO = frozenset()


cdef class EventRequest:
    """One validated event: where it goes, what it is, who is excluded, what to answer."""

    cdef public object channels, name, data, socket_id, info

    def __init__(self, channels, name, data, socket_id, info):
        self.channels = channels
        self.name = name
        self.data = data
        self.socket_id = socket_id
        self.info = info

    def __repr__(self):
        return f"<EventRequest {self.name!r} on {self.channels!r}>"


def parse_info(value, allowed, where=""):
    """An ``info`` attribute list (``"a,b"``); 400 for an attribute not in ``allowed``."""
    if value is None or value == "":
        return frozenset()
    if not isinstance(value, str):
        raise ApiError(400, f"{where}info must be a comma-separated string.")
    attrs = frozenset(a.strip() for a in value.split(",") if a.strip())
    unknown = attrs - allowed
    if unknown:
        raise ApiError(
            400,
            f"{where}info: unknown attribute {echo(min(unknown))!r} "
            f"(allowed: {', '.join(sorted(allowed))}).",
        )
    return attrs


cdef list _channels(dict item, str where, bint batch):
    if batch:
        channel = item.get("channel")
        if channel is None:
            raise ApiError(400, f"{where}channel is required.")
        return [channel]
    channels = item.get("channels")
    if channels is None:
        channel = item.get("channel")
        if channel is None:
            raise ApiError(400, "channels (a list) or channel (a string) is required.")
        return [channel]
    if not isinstance(channels, list):
        raise ApiError(400, "channels must be a list of channel names.")
    return channels


def parse_event(item, cfg, *, batch_index=None):
    """Validate one event (the body of ``/events`` or one item of a batch) against the app's limits."""
    return _parse_event(item, cfg, batch_index)


cdef EventRequest _parse_event(item, cfg, batch_index):
    cdef EventRequest event
    cdef str where
    cdef list channels
    cdef dict fields
    where = "" if batch_index is None else f"batch[{batch_index}]: "
    if not isinstance(item, dict):
        raise ApiError(400, f"{where}expected a JSON object.")
    fields = item
    name = fields.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, f"{where}name must be a non-empty string.")
    if len(name) > cfg.max_event_name_length:
        raise ApiError(400, f"{where}event name longer than {cfg.max_event_name_length} characters.")
    data = fields.get("data")
    if not isinstance(data, str):
        raise ApiError(400, f"{where}data must be a string (JSON-encode objects).")
    limit = int(cfg.max_event_payload_in_kb * 1024)
    # A str holds at most 4 bytes per character: measure only when it could be over.
    if len(<str>data) * 4 > limit and len((<str>data).encode("utf-8", "surrogatepass")) > limit:
        raise ApiError(413, f"{where}data is over the {cfg.max_event_payload_in_kb:g} KB limit.")
    channels = _channels(fields, where, batch_index is not None)
    if not channels:
        raise ApiError(400, f"{where}channels must not be empty.")
    if len(channels) > cfg.max_event_channels_at_once:
        raise ApiError(400, f"{where}more than {cfg.max_event_channels_at_once} channels at once.")
    max_len = cfg.max_channel_name_length
    for ch in channels:
        if not isinstance(ch, str):
            raise ApiError(400, f"{where}channel names must be strings.")
        if not valid_channel_name(ch, max_len):
            raise ApiError(
                400,
                f"{where}invalid channel name {echo(ch)!r} "
                f"(allowed: A-Z a-z 0-9 _-=@,.; up to {max_len} characters).",
            )
    if len(channels) > 1:
        # Pusher's rule: the SDKs encrypt per channel, so one payload cannot go to two.
        if any(channel_kind(ch) == KIND_ENCRYPTED for ch in channels):
            raise ApiError(400, f"{where}an encrypted channel cannot be triggered with other channels.")
        if len(set(channels)) != len(channels):
            channels = list(dict.fromkeys(channels))
    socket_id = fields.get("socket_id")
    if socket_id is not None and not is_socket_id(socket_id):
        raise ApiError(400, f"{where}socket_id must be a string like '123.456'.")
    info = fields.get("info")
    info = _NO_INFO if info is None else parse_info(info, _TRIGGER_INFO, where)
    event = EventRequest.__new__(EventRequest)  # (its fields set here: __init__ is a Python call)
    event.channels = channels
    event.name = name
    event.data = data
    event.socket_id = socket_id
    event.info = info
    return event


# ---------------------------------------------------------------- MD5 and HMAC-SHA256
# The two hashes of every signed request, around the block functions of
# csrc/soketi_digest.h (RFC 1321, FIPS 180-4): hashlib's objects cost ~17k instructions
# a request in allocations, context copies and calls. Checked against hashlib by
# tests/test_trigger_twins.py.

cdef extern from "soketi_digest.h":
    void sk_sha256_block(uint32_t* st, const uint8_t* p) noexcept nogil
    void sk_md5_block(uint32_t* st, const uint8_t* p) noexcept nogil
    int sk_sha256_init() noexcept nogil
    int sk_sha256_is_shani() noexcept nogil
    void sk_sha256_use_portable(int flag) noexcept nogil

# The SHA-256 block function for this CPU, chosen once: the SHA extensions' when the
# CPU has them (not under valgrind, whose CPUID hides them), else the portable one.
sk_sha256_init()


def sha256_impl():
    """The SHA-256 block function in use: ``"sha-ni"`` or ``"portable"``."""
    return "sha-ni" if sk_sha256_is_shani() else "portable"


def _use_portable_sha256(bint flag):
    """Tests only: the portable block function (``True``), or the best one for this CPU."""
    sk_sha256_use_portable(flag)

cdef uint32_t[8] _SHA256_IV = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]
cdef const char* _HEX = b"0123456789abcdef"


cdef void _sha256_finish(const uint32_t* state, uint64_t done, const uint8_t* msg, Py_ssize_t n,
                         uint8_t* out) noexcept nogil:
    """SHA-256 of (``done`` bytes already in ``state``) + ``msg``: the 32-byte digest in ``out``."""
    cdef uint32_t h[8]
    cdef uint8_t tail[128]
    cdef Py_ssize_t rest, size, i
    cdef uint64_t bits = (done + <uint64_t>n) * 8
    memcpy(h, state, 32)
    while n >= 64:
        sk_sha256_block(h, msg)
        msg += 64
        n -= 64
    rest = n
    memcpy(tail, msg, rest)
    tail[rest] = 0x80
    size = 64 if rest < 56 else 128
    memset(tail + rest + 1, 0, size - rest - 1)
    for i in range(8):
        tail[size - 1 - i] = <uint8_t>(bits >> (8 * i))
    sk_sha256_block(h, tail)
    if size == 128:
        sk_sha256_block(h, tail + 64)
    for i in range(8):
        out[4 * i] = <uint8_t>(h[i] >> 24)
        out[4 * i + 1] = <uint8_t>(h[i] >> 16)
        out[4 * i + 2] = <uint8_t>(h[i] >> 8)
        out[4 * i + 3] = <uint8_t>h[i]


cdef bytes _hmac_states(bytes key):
    """The SHA-256 states after the key's inner and outer padded blocks (RFC 2104), 64 bytes."""
    cdef uint8_t block[64]
    cdef uint32_t states[16]
    cdef Py_ssize_t i, n
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    n = len(key)
    memset(block, 0, 64)
    memcpy(block, PyBytes_AS_STRING(key), n)
    memcpy(states, _SHA256_IV, 32)
    memcpy(states + 8, _SHA256_IV, 32)
    for i in range(64):
        block[i] ^= 0x36
    sk_sha256_block(states, block)
    for i in range(64):
        block[i] ^= 0x36 ^ 0x5C
    sk_sha256_block(states + 8, block)
    return PyBytes_FromStringAndSize(<char*>states, 64)


cdef void _hmac(bytes states, const uint8_t* msg, Py_ssize_t n, uint8_t* out) noexcept:
    cdef const uint32_t* st = <const uint32_t*>PyBytes_AS_STRING(states)
    cdef uint8_t inner[32]
    _sha256_finish(st, 64, msg, n, inner)
    _sha256_finish(st + 8, 64, inner, 32, out)


cdef void _md5_hex(const uint8_t* msg, Py_ssize_t n, char* out) noexcept nogil:
    """The MD5 of ``msg`` as 32 lower-case hex digits in ``out``."""
    cdef uint32_t h[4]
    cdef uint8_t tail[128]
    cdef Py_ssize_t rest, size, i
    cdef uint64_t bits = (<uint64_t>n) * 8
    cdef uint8_t byte
    h[0] = 0x67452301; h[1] = 0xefcdab89; h[2] = 0x98badcfe; h[3] = 0x10325476
    while n >= 64:
        sk_md5_block(h, msg)
        msg += 64
        n -= 64
    rest = n
    memcpy(tail, msg, rest)
    tail[rest] = 0x80
    size = 64 if rest < 56 else 128
    memset(tail + rest + 1, 0, size - rest - 1)
    for i in range(8):
        tail[size - 8 + i] = <uint8_t>(bits >> (8 * i))
    sk_md5_block(h, tail)
    if size == 128:
        sk_md5_block(h, tail + 64)
    for i in range(16):
        byte = <uint8_t>(h[i >> 2] >> (8 * (i & 3)))
        out[2 * i] = _HEX[byte >> 4]
        out[2 * i + 1] = _HEX[byte & 15]


cdef inline bint _same(const char* a, const char* b, Py_ssize_t n) noexcept nogil:
    """Constant-time equality of ``n`` bytes (as hmac.compare_digest)."""
    cdef Py_ssize_t i
    cdef unsigned char diff = 0
    for i in range(n):
        diff |= <unsigned char>(a[i] ^ b[i])
    return diff == 0


cdef inline int _nibble(char c) noexcept nogil:
    if b"0" <= c <= b"9":
        return c - 48
    if b"a" <= c <= b"f":
        return c - 87
    if b"A" <= c <= b"F":
        return c - 55
    return -1


cdef bint _unhex(const char* text, uint8_t* out) noexcept nogil:
    """64 hex digits (either case) to 32 bytes; False for any other character."""
    cdef int i, hi, lo
    for i in range(32):
        hi = _nibble(text[2 * i])
        lo = _nibble(text[2 * i + 1])
        if hi < 0 or lo < 0:
            return False
        out[i] = <uint8_t>((hi << 4) | lo)
    return True


cpdef str md5_hex(bytes data):
    """The MD5 of ``data`` as lower-case hex (``hashlib.md5(data).hexdigest()``)."""
    cdef char out[32]
    _md5_hex(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), out)
    return PyUnicode_FromStringAndSize(out, 32)


cpdef bytes hmac_sha256(bytes key, bytes msg):
    """``hmac.digest(key, msg, "sha256")``."""
    cdef uint8_t out[32]
    _hmac(_hmac_states(key), <const uint8_t*>PyBytes_AS_STRING(msg), PyBytes_GET_SIZE(msg), out)
    return PyBytes_FromStringAndSize(<char*>out, 32)


cdef class TriggerPath:
    """The fast path of one :class:`~soketi_impl.http.api.HttpApi` (see the pure twin)."""

    cdef public object api, apps, pusher, handler, trigger, general_handle, general_check, local
    cdef public bint inline
    cdef object _request_of, _app_of, _declined
    cdef tuple _params_of
    cdef dict _keys  # app secret -> its HMAC key states (at most _MAX_KEYS: apps from a database come and go)
    cdef object _route_table, _route_path, _route_found  # the last route found (_route)
    # The inner hash's state after the first 64 bytes of the last signed message, and
    # those bytes: method, path and the query's first parameters (the key, the
    # timestamp), the same for every request of a publisher within a second.
    cdef object _prefix_of
    cdef uint8_t _prefix[64]
    cdef uint32_t _prefix_state[8]

    def __init__(self, api):
        from soketi_impl.http.events import trigger  # (that module imports this one)
        from soketi_impl.adapters.base import LocalAdapter
        from soketi_impl.pusher.api import InProcessApi
        from soketi_impl.pusher.host import AdapterCallbacks

        self.api = api
        self.pusher = api.pusher
        self.apps = api.pusher.apps
        self.handler = trigger
        self.trigger = InProcessApi.trigger
        core = type(api.pusher)
        self.inline = (
            core.publish is InProcessApi.publish
            and core.deliver_and_publish is AdapterCallbacks.deliver_and_publish
            and core._deliver is AdapterCallbacks._deliver
        )
        self.local = LocalAdapter
        self._request_of = None
        self._app_of = None
        self._params_of = None
        self._declined = None
        self._keys = {}
        self._prefix_of = None
        self._route_table = self._route_path = self._route_found = None
        self.general_handle = api.handle
        self.general_check = api.check_head

    cdef void _sign(self, bytes states, const uint8_t* msg, Py_ssize_t n, uint8_t* out):
        """HMAC-SHA256 of ``msg`` under the key ``states``, the first block taken from the
        last message when it is the same."""
        cdef const uint32_t* st = <const uint32_t*>PyBytes_AS_STRING(states)
        cdef uint8_t inner[32]
        if n < 64:
            _hmac(states, msg, n, out)
            return
        if self._prefix_of is not states or memcmp(self._prefix, msg, 64) != 0:
            memcpy(self._prefix_state, st, 32)
            sk_sha256_block(self._prefix_state, msg)
            memcpy(self._prefix, msg, 64)
            self._prefix_of = states
        _sha256_finish(self._prefix_state, 128, msg + 64, n - 64, inner)
        _sha256_finish(st + 8, 64, inner, 32, out)

    cdef _publish(self, app, str channel, name, data, socket_id):
        """``pusher.publish(...)``, inlined when it is the core's own and the channel keeps no cache."""
        pusher = self.pusher
        if not self.inline or is_cache_channel(channel) or "publish" in pusher.__dict__:
            pusher.publish(app, channel, name, data, socket_id)
            return
        payload = encode_event(name, channel, data)
        exclude = None
        if socket_id:
            sock = app.sockets.get(socket_id)
            if sock is not None:
                exclude = sock.sink
        table = app.table
        if type(table) is ChannelTable and (exclude is None or type(exclude) is Sink):
            (<ChannelTable>table).broadcast(channel, payload, <Sink>exclude)  # a C call
        else:
            table.broadcast(channel, payload, exclude)
        adapter = pusher.adapter
        if type(adapter) is not self.local:  # (the local adapter has nothing to carry)
            adapter.publish(app.config.id, channel, payload, socket_id, False)
        if pusher.observers:
            pusher.observers.tell("published", app.config, channel, name, len(payload))

    def handle_http(self, request):
        """A host's HTTP handler: :meth:`handle`, else ``general_handle``."""
        answer = self.handle(request)
        if answer is not None:
            return answer
        self._declined = request
        return self.general_handle(request)

    def check_http_head(self, request):
        """A host's head check: None for a trigger :meth:`head` accepts, else ``general_check``."""
        if self.head(request):
            return None
        return self.general_check(request)

    cdef tuple _route(self, str path):
        """``api._routed[("POST", path)]`` while the route table is the one it was made for;
        the last one found is kept (a publisher sends the same path)."""
        api = self.api
        routes = api.routes
        if api._routed_by is not routes:
            return None
        if self._route_table is routes and path == self._route_path:
            return self._route_found
        routed = (<dict>api._routed).get(("POST", path))
        if routed is None:
            return None
        self._route_table = routes
        self._route_path = path
        self._route_found = routed
        return routed

    cdef object _app(self, request):
        if request.method != "POST":
            return None
        return self._app_for_route(self._route(request.path))

    cdef object _app_for_route(self, routed):
        if routed is None or (<tuple>routed)[0] is not self.handler:
            return None
        if self.pusher.app_manager is not None:
            return None
        return (<dict>self.apps).get((<dict>(<tuple>routed)[1]).get("app_id", ""))

    cdef tuple _params(self, str query, cfg):
        cdef tuple found = _sdk_query(query)
        cdef str stamp
        cdef const char* text
        cdef Py_ssize_t n, i
        cdef long long value
        if found is None:
            return None
        signed, key, signature, stamp, version, md5 = found
        if key != cfg.key or not signature:
            return None
        if version is not None and version != "1.0":
            return None
        # (str.isdigit and int(), on the ASCII digits sdk_query leaves: read here)
        if not stamp or len(stamp) > _MAX_STAMP_DIGITS:
            return None
        text = PyUnicode_AsUTF8AndSize(stamp, &n)
        value = 0
        for i in range(n):
            if not b"0" <= text[i] <= b"9":
                return None
            value = value * 10 + (text[i] - 48)
        if abs(<double>self.api.clock() - <double>value) > _MAX_SKEW:
            return None
        if md5 is None:
            return None
        return (signed, signature, md5)

    def head(self, request):
        """True when ``request`` is a trigger whose head the general ``check_head`` accepts."""
        app = self._app(request)
        if app is None:
            return False
        params = self._params(request.query, app.config)
        if params is None:
            return False
        self._request_of = request
        self._app_of = app
        self._params_of = params
        return True

    def handle(self, request):
        """The answer to ``request`` when it is a trigger of the common case; None: nothing was done."""
        cdef tuple params
        cdef bint checked
        if self._declined is request:
            self._declined = None
            return None
        checked = self._request_of is request
        app = self._app_of
        params = self._params_of
        self._request_of = None
        self._app_of = None
        self._params_of = None
        body = request.body
        if not body:
            return None
        if not checked:
            app = self._app(request)
            if app is None:
                return None
        cfg = app.config
        if not cfg.enabled:
            return None
        if not checked:
            params = self._params(request.query, cfg)
        if params is None:
            return None
        if type(body) is not bytes:
            body = bytes(body)  # (a body read in several chunks is a bytearray)
        routed = self._route(request.path)
        if routed is None:
            return None
        done = self._trigger(app, params, routed, <bytes>body)
        if done is None:
            return None
        api = self.api
        if done is not True:
            return api._finish(request, app, error_response(done))
        # HttpResponse(200, b"{}"), its fields set here (the dataclass's __init__ is Python)
        response = _new_response(HttpResponse)
        response.status = 200
        response.body = b"{}"
        response.content_type = "application/json"
        response.headers = []
        cors = api.cors
        if cors._any:
            response.headers.append(_ANY_ORIGIN)
            return response
        return cors.decorate(request, response)

    def express(self, str path, str query, bytes body):
        """A whole request ``POST path?query`` with ``body``, from a host that has not made
        an :class:`HttpRequest` of it: True when it was a trigger of the common case, done
        and to be answered ``200 {}`` with ``Access-Control-Allow-Origin: *`` (the answer
        :meth:`handle` gives it); False: nothing was done, take the general way."""
        if not body or not self.api.cors._any:
            return False
        routed = self._route(path)
        app = self._app_for_route(routed)
        if app is None:
            return False
        cfg = app.config
        if not cfg.enabled:
            return False
        params = self._params(query, cfg)
        if params is None:
            return False
        return self._trigger(app, params, routed, body) is True

    cdef object _trigger(self, app, tuple params, tuple routed, bytes body):
        """The signature checks and the trigger (``routed``: the route of the request's
        path): True when it was done; an ApiError when the general path refuses it
        (nothing done); None: not the common case."""
        cdef dict item
        cdef str query, signature, md5
        cdef char hexd[32]
        cdef uint8_t digest[32]
        cdef Py_ssize_t md5_len, sig_len
        cdef const char* md5_text
        cdef const char* sig_text
        cdef uint8_t given[32]
        cdef char signed[_SIGNED_MAX]
        cdef Py_ssize_t path_len, query_len
        cdef EventRequest event
        cfg = app.config
        query, signature, md5 = params
        # body_md5, then the signature (signing.check_api_signature), hashed here
        md5_text = PyUnicode_AsUTF8AndSize(md5, &md5_len)  # (ASCII: sdk_query read it)
        _md5_hex(<const uint8_t*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), hexd)
        if md5_len != 32 or not _same(md5_text, hexd, 32):
            return None
        # bytes.fromhex(signature), for the 64 hex digits of a SHA-256 (anything else,
        # the general path reads: fromhex also takes spaces)
        sig_text = PyUnicode_AsUTF8AndSize(signature, &sig_len)  # (ASCII: sdk_query read it)
        if sig_len != 64 or not _unhex(sig_text, given):
            return None
        secret = cfg.secret
        states = self._keys.get(secret)
        if states is None:
            if len(self._keys) >= _MAX_KEYS:
                self._keys.clear()  # rebuilt on use: a few hundred instructions per app
            states = self._keys[secret] = _hmac_states(secret.encode())
        api = self.api
        for signed_path in routed[2]:
            # b"POST\n" + path + b"\n" + query, built in place when both are ASCII (their
            # UTF-8 is their own bytes), as a bytes object otherwise
            path_len = PyUnicode_GET_LENGTH(signed_path)
            query_len = PyUnicode_GET_LENGTH(query)
            if PyUnicode_IS_ASCII(signed_path) and PyUnicode_IS_ASCII(query) and 6 + path_len + query_len <= _SIGNED_MAX:
                memcpy(signed, b"POST\n", 5)
                memcpy(signed + 5, PyUnicode_DATA(signed_path), path_len)
                signed[5 + path_len] = 10
                memcpy(signed + 6 + path_len, PyUnicode_DATA(query), query_len)
                self._sign(states, <const uint8_t*>signed, 6 + path_len + query_len, digest)
            else:
                msg = f"POST\n{signed_path}\n{query}".encode("utf-8", "surrogatepass")
                self._sign(states, <const uint8_t*>PyBytes_AS_STRING(msg), PyBytes_GET_SIZE(msg), digest)
            if _same(<const char*>digest, <const char*>given, 32):
                break
        else:
            return None
        pusher = self.pusher
        if "trigger" in pusher.__dict__ or type(pusher).trigger is not self.trigger:
            return None
        try:
            loaded = _loads(body)
        except _JSONDecodeError:
            return None
        if type(loaded) is not dict:
            return None
        item = loaded
        if item.get("info") is not None:
            return None
        if api._checked is not None:
            api._checked = None  # (a head check_head kept is not this request's)
        # From here on, what the general path's handler does, refusals included.
        try:
            event = _parse_event(item, cfg, None)
            limit = cfg.max_backend_events_per_second
            if limit >= 0:
                api.rates.take(cfg.id, _EVENTS_WHAT, len(event.channels), limit)
        except ApiError as exc:
            return exc  # (a refused trigger costs nothing: see http/rates.py)
        name = event.name
        data = event.data
        socket_id = event.socket_id
        for channel in event.channels:
            self._publish(app, channel, name, data, socket_id)
        # api._finish, for the 200 "{}"
        stats = app.stats
        if type(stats) is Stats:  # the compiled counters: C fields
            (<Stats>stats).http_calls += 1
            (<Stats>stats).http_bytes_received += len(body)
            (<Stats>stats).http_bytes_sent += 2
        else:
            stats.http_calls += 1
            stats.http_bytes_received += len(body)
            stats.http_bytes_sent += 2
        return True
