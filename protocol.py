"""The Clubroom wire protocol, version 1, in code.

This module is the single implementation of ``shared/protocol-v1.md``: one
typed struct per frame, decoding that turns any bad input into a precise
protocol error, encoding, error codes, limits and the naming rules. Both the
server and the clients import it; it imports no network, database or UI
library so that it stays easy to test and to reuse (bots, tests, other UIs).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec

SUBPROTOCOL: Final = "clubroom.v1"
DEFAULT_PORT: Final = 8765
DEFAULT_URL: Final = f"ws://127.0.0.1:{DEFAULT_PORT}"

MAX_FRAME_BYTES: Final = 64 * 1024
MAX_ID_LENGTH: Final = 64
MAX_NONCE_LENGTH: Final = 64
MAX_TEXT_LENGTH: Final = 4000
MAX_ROOM_NAME_LENGTH: Final = 64
USERNAME_MIN, USERNAME_MAX = 3, 32
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
JOIN_LATEST: Final = 50
JOIN_AFTER_MAX: Final = 500
HISTORY_DEFAULT, HISTORY_MAX = 50, 100
MAX_TOPIC_LENGTH: Final = 300
MAX_REASON_LENGTH: Final = 300
# Typing: a client renews ``active`` at most every TYPING_RELAY_SECONDS; the
# server relays at most one typing event a user a room in that time, and an
# ``active`` (or ``paused``) state not renewed within TYPING_EXPIRY_SECONDS ends.
TYPING_RELAY_SECONDS: Final = 2.5
TYPING_EXPIRY_SECONDS: Final = 6.0
TOKEN_LIFETIME_SECONDS: Final = 30 * 24 * 3600
# Living messages (extensions): search pages, reply excerpts, reactions.
SEARCH_DEFAULT, SEARCH_MAX, SEARCH_OFFSET_MAX = 20, 50, 10_000
MAX_QUERY_LENGTH: Final = 200
EXCERPT_LENGTH: Final = 100
MAX_REACTIONS_PER_MESSAGE: Final = 20
MAX_MESSAGE_ID: Final = 2**63 - 1
# At most this many accounts in one ``admin_users`` reply (narrow with ``query``).
ADMIN_USERS_MAX: Final = 500
# Every reply that carries messages stops adding them once its encoded size
# would pass REPLY_BUDGET_BYTES (and then says ``more``), so no frame the
# server sends is larger than MAX_SERVER_FRAME_BYTES: the budget plus one
# message of 4,000 four-byte characters and the envelope. Clients must accept
# frames of that size.
REPLY_BUDGET_BYTES: Final = 256 * 1024
MAX_SERVER_FRAME_BYTES: Final = 512 * 1024
# The header a trusted reverse proxy (such as ``clubroom web``) uses to tell
# the server the address of the person behind it.
FORWARDED_FOR_HEADER: Final = "X-Forwarded-For"

# Close codes the server uses besides the RFC 6455 ones (1001, 1009).
CLOSE_SLOW_CONSUMER: Final = 4008
CLOSE_IDLE: Final = 4000
CLOSE_TOO_MANY_CONNECTIONS: Final = 4029
# The session's token was revoked: by a logout on another connection of the
# same session, or by an administrator (account disabled or deleted, password
# reset, sessions revoked). Resuming will fail; log in again.
CLOSE_SESSION_ENDED: Final = 4001
CLOSE_LOGGED_OUT: Final = CLOSE_SESSION_ENDED


class ErrorCode(StrEnum):
    """Every error code of the contract; the ``code`` of an ``error`` frame."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHENTICATED = "unauthenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    INVALID_USERNAME = "invalid_username"
    USERNAME_TAKEN = "username_taken"
    WEAK_PASSWORD = "weak_password"
    INVALID_CREDENTIALS = "invalid_credentials"
    INVALID_TOKEN = "invalid_token"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    INVALID_ROOM_NAME = "invalid_room_name"
    ROOM_EXISTS = "room_exists"
    NO_SUCH_ROOM = "no_such_room"
    NOT_IN_ROOM = "not_in_room"
    INVALID_TEXT = "invalid_text"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    # Extensions (docs/protocol.md): the database or the cluster bus is down
    # for a moment; retry later. Nothing acknowledged is ever lost.
    UNAVAILABLE = "unavailable"
    # Extensions for administrators (docs/protocol.md, "Administration").
    FORBIDDEN = "forbidden"
    NO_SUCH_USER = "no_such_user"
    # Extensions for living messages (docs/protocol.md, "Edits, deletions, …").
    NO_SUCH_MESSAGE = "no_such_message"
    MESSAGE_DELETED = "message_deleted"
    INVALID_REACTION = "invalid_reaction"
    TOO_MANY_REACTIONS = "too_many_reactions"
    INVALID_QUERY = "invalid_query"
    # Extensions for conversations (docs/protocol.md, "Conversation").
    NOT_OWNER = "not_owner"  # only the room's owner may do that
    BANNED = "banned"  # the room's owner banned this user from it
    INVALID_TOPIC = "invalid_topic"


class ProtocolError(Exception):
    """A request that must be answered with an ``error`` frame.

    Raised by decoding and by the rule checks below, and by the server's own
    logic; the server turns it into a frame in exactly one place.
    """

    def __init__(self, code: ErrorCode, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


# --------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------

RequestId: TypeAlias = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)] | int
MessageId: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=MAX_MESSAGE_ID)]
Nonce: TypeAlias = Annotated[str, msgspec.Meta(max_length=MAX_NONCE_LENGTH)]
HistoryLimit: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=HISTORY_MAX)]
SearchLimit: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=SEARCH_MAX)]
SearchOffset: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=SEARCH_OFFSET_MAX)]
SearchText: TypeAlias = Annotated[str, msgspec.Meta(max_length=MAX_QUERY_LENGTH)]
ReactionText: TypeAlias = Annotated[str, msgspec.Meta(max_length=64)]


class _Frame(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True):
    """Base of every frame: tagged by ``type``; absent optional fields stay absent."""


class _Request(_Frame, kw_only=True):
    id: RequestId | None = None


# --------------------------------------------------------------------------
# Client requests
# --------------------------------------------------------------------------


class Register(_Request, tag="register", kw_only=True):
    username: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log line
        return f"Register(id={self.id!r}, username={self.username!r}, password=***)"


class Login(_Request, tag="login", kw_only=True):
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Login(id={self.id!r}, username={self.username!r}, password=***)"


class Resume(_Request, tag="resume", kw_only=True):
    token: str

    def __repr__(self) -> str:
        return f"Resume(id={self.id!r}, token=***)"


class Logout(_Request, tag="logout", kw_only=True):
    pass


class CreateRoom(_Request, tag="create_room", kw_only=True):
    room: str
    # Extension: a private room, named ``~creator/room`` (docs/protocol.md).
    private: bool = False


class JoinRoom(_Request, tag="join_room", kw_only=True):
    room: str
    after: MessageId | None = None


class LeaveRoom(_Request, tag="leave_room", kw_only=True):
    room: str


class Send(_Request, tag="send", kw_only=True):
    room: str
    text: str
    nonce: Nonce | None = None
    reply_to: MessageId | None = None  # extension: the message of the room this answers


class Edit(_Request, tag="edit", kw_only=True):
    """Extension: replace the text of one's own message."""

    room: str
    message: MessageId
    text: str


class Delete(_Request, tag="delete", kw_only=True):
    """Extension: erase one's own message (a tombstone stays)."""

    room: str
    message: MessageId


class React(_Request, tag="react", kw_only=True):
    """Extension: add (or, with ``remove``, take back) an emoji reaction."""

    room: str
    message: MessageId
    emoji: ReactionText
    remove: bool = False


class Search(_Request, tag="search", kw_only=True):
    """Extension: search a joined room's messages by words."""

    room: str
    query: SearchText
    order: Literal["newest", "best"] = "newest"
    offset: SearchOffset = 0
    limit: SearchLimit = SEARCH_DEFAULT


class History(_Request, tag="history", kw_only=True):
    room: str
    before: MessageId
    limit: HistoryLimit = HISTORY_DEFAULT


class AdminRooms(_Request, tag="admin_rooms", kw_only=True):
    """Administrators only: every room, with members and stored messages."""


class AdminDeleteRoom(_Request, tag="admin_delete_room", kw_only=True):
    """Administrators only: delete a room and its messages for everyone."""

    room: str


class AdminDisableUser(_Request, tag="admin_disable_user", kw_only=True):
    """Administrators only: lock an account and close its connections."""

    username: str


class AdminEnableUser(_Request, tag="admin_enable_user", kw_only=True):
    """Administrators only: unlock a disabled account (its old password works again)."""

    username: str


class AdminUsers(_Request, tag="admin_users", kw_only=True):
    """Administrators only: the accounts whose name contains ``query`` (all if empty)."""

    query: Annotated[str, msgspec.Meta(max_length=USERNAME_MAX)] = ""


class MarkRead(_Request, tag="mark_read", kw_only=True):
    """Move this user's read marker in a joined room forward to ``up_to``."""

    room: str
    up_to: MessageId


class MyRooms(_Request, tag="my_rooms", kw_only=True):
    """The rooms this user is a member of, with unread and mention counts."""


class TypingState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    DONE = "done"


class Typing(_Request, tag="typing", kw_only=True):
    room: str
    state: TypingState


class SetTopic(_Request, tag="set_topic", kw_only=True):
    room: str
    topic: str


class Kick(_Request, tag="kick", kw_only=True):
    room: str
    username: str
    reason: str = ""


class Ban(_Request, tag="ban", kw_only=True):
    room: str
    username: str
    reason: str = ""


class Unban(_Request, tag="unban", kw_only=True):
    room: str
    username: str


class Invite(_Request, tag="invite", kw_only=True):
    """The owner of a private room lets a user join it."""

    room: str
    username: str


class Direct(_Request, tag="direct", kw_only=True):
    """Open (creating if need be) the private two-person room with ``username``."""

    username: str


Request: TypeAlias = (
    Register
    | Login
    | Resume
    | Logout
    | CreateRoom
    | JoinRoom
    | LeaveRoom
    | Send
    | History
    | AdminRooms
    | AdminDeleteRoom
    | AdminDisableUser
    | AdminEnableUser
    | AdminUsers
    | Edit
    | Delete
    | React
    | Search
    | MarkRead
    | MyRooms
    | Typing
    | SetTopic
    | Kick
    | Ban
    | Unban
    | Invite
    | Direct
)
REQUEST_TYPES: Final[dict[str, type[_Request]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        Register,
        Login,
        Resume,
        Logout,
        CreateRoom,
        JoinRoom,
        LeaveRoom,
        Send,
        History,
        AdminRooms,
        AdminDeleteRoom,
        AdminDisableUser,
        AdminEnableUser,
        AdminUsers,
        Edit,
        Delete,
        React,
        Search,
        MarkRead,
        MyRooms,
        Typing,
        SetTopic,
        Kick,
        Ban,
        Unban,
        Invite,
        Direct,
    )
}
AUTH_FREE_TYPES: Final = frozenset({"register", "login", "resume", "logout"})


# --------------------------------------------------------------------------
# Server frames
# --------------------------------------------------------------------------


class Reaction(msgspec.Struct, frozen=True, omit_defaults=True):
    """One emoji on a message: how many gave it, and (in replies) whether you did."""

    emoji: str
    count: int
    mine: bool = False


class ReplyRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """The message a reply answers: its id, author and the start of its text."""

    id: int
    author: str
    excerpt: str = ""
    deleted: bool = False


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """A chat message as it travels on the wire.

    The optional fields are extensions (living messages): absent unless set.
    A deleted message keeps ``id``, ``author`` and ``at``, has ``text`` "" and
    ``deleted`` true.
    """

    id: int
    room: str
    author: str
    text: str
    at: str
    edited_at: str | None = None
    deleted: bool = False
    reply_to: ReplyRef | None = None
    reactions: list[Reaction] | None = None


class Welcome(_Request, tag="welcome", kw_only=True):
    username: str
    token: str
    expires_at: str
    # An extension: present (true) only for accounts with the admin role, so a
    # client knows to offer its admin screen. The server still checks the role
    # at every admin request; this is a hint, not a permission.
    admin: bool = False

    def __repr__(self) -> str:
        return f"Welcome(id={self.id!r}, username={self.username!r}, token=***)"


class Ok(_Request, tag="ok", kw_only=True):
    pass


class Joined(_Request, tag="joined", kw_only=True):
    room: str
    members: list[str]
    messages: list[Message]
    more: bool
    # Extensions, with ``after`` only: the current state of earlier messages
    # changed since ``after``, and the position to resume from next time.
    changes: list[Message] | None = None
    cursor: int | None = None
    # Extensions (docs/protocol.md, "Conversation"): absent from older servers.
    owner: str | None = None
    topic: str = ""
    read_up_to: int | None = None


class Sent(_Request, tag="sent", kw_only=True):
    room: str
    message: Message


class HistoryPage(_Request, tag="history", kw_only=True):
    room: str
    messages: list[Message]
    more: bool


class Changed(_Request, tag="changed", kw_only=True):
    """Extension: the reply to ``edit``, ``delete`` and ``react``: the message as it is now."""

    room: str
    message: Message


class SearchResult(msgspec.Struct, frozen=True):
    """A message that matched, and where the searched words are in its text.

    ``highlights`` are ``[start, end)`` offsets in code points into
    ``message.text``: plain numbers, never markup.
    """

    message: Message
    highlights: list[tuple[int, int]]


class SearchPage(_Request, tag="search", kw_only=True):
    """Extension: one page of search results; ask again with ``offset`` + len while ``more``."""

    room: str
    results: list[SearchResult]
    more: bool


class MessageChanged(_Frame, tag="message_changed", kw_only=True):
    """Extension event: a message was edited, deleted or reacted to.

    ``position`` is the change's own place in the room's id order (what
    ``after`` counts); ``message`` is the message as it is now (reactions
    without ``mine``: compare ``by`` with yourself).
    """

    room: str
    change: Literal["edited", "deleted", "reacted", "unreacted"]
    by: str
    position: int
    message: Message
    emoji: str | None = None


class Error(_Request, tag="error", kw_only=True):
    code: ErrorCode
    message: str
    retry_after: float | None = None


class MessageEvent(_Frame, tag="message", kw_only=True):
    message: Message


class MemberJoined(_Frame, tag="member_joined", kw_only=True):
    room: str
    username: str


class MemberLeft(_Frame, tag="member_left", kw_only=True):
    room: str
    username: str


class AdminRoomInfo(msgspec.Struct, frozen=True):
    """One room in an ``admin_rooms`` reply."""

    room: str
    members: int
    messages: int


class AdminRoomList(_Request, tag="admin_rooms", kw_only=True):
    rooms: list[AdminRoomInfo]


class AdminUserInfo(msgspec.Struct, frozen=True):
    """One account in an ``admin_users`` reply (never its password hash)."""

    username: str
    status: Literal["active", "disabled"]
    admin: bool
    sessions: int  # unexpired tokens: devices it is logged in on


class AdminUserList(_Request, tag="admin_users", kw_only=True):
    users: list[AdminUserInfo]
    more: bool = False  # more accounts matched than ADMIN_USERS_MAX


class RoomDeleted(_Frame, tag="room_deleted", kw_only=True):
    """An administrator deleted the room: it and its messages are gone for everyone."""

    room: str


class RoomState(msgspec.Struct, frozen=True, omit_defaults=True):
    """One room in a ``my_rooms`` reply: the badges a client shows before joining."""

    room: str
    unread: int
    mentions: int
    last_id: int
    read_up_to: int


class Invitation(msgspec.Struct, frozen=True):
    room: str
    by: str


class MyRoomList(_Request, tag="my_rooms", kw_only=True):
    rooms: list[RoomState]
    invitations: list[Invitation] = []


class Invited(_Frame, tag="invited", kw_only=True):
    """To every connection of a user invited into a private room (or a direct message)."""

    room: str
    by: str


class ReadMarker(_Request, tag="read", kw_only=True):
    """Reply to ``mark_read`` (with ``id``) and event to the user's other connections."""

    room: str
    up_to: int


class MentionEvent(_Frame, tag="mention", kw_only=True):
    """To a mentioned member's connections in the room: message ``message_id`` names them."""

    room: str
    message_id: int
    author: str


class TypingEvent(_Frame, tag="typing", kw_only=True):
    room: str
    username: str
    state: TypingState


class TopicChanged(_Frame, tag="topic", kw_only=True):
    room: str
    topic: str
    by: str


class OwnerChanged(_Frame, tag="owner", kw_only=True):
    room: str
    owner: str


class Kicked(_Frame, tag="kicked", kw_only=True):
    """To every connection of a removed member (and ``member_left`` to the others)."""

    room: str
    by: str
    reason: str = ""
    banned: bool = False


Reply: TypeAlias = (
    Welcome
    | Ok
    | Joined
    | Sent
    | HistoryPage
    | Error
    | AdminRoomList
    | AdminUserList
    | Changed
    | SearchPage
    | MyRoomList
    | ReadMarker
)
Event: TypeAlias = (
    MessageEvent
    | MemberJoined
    | MemberLeft
    | RoomDeleted
    | MessageChanged
    | MentionEvent
    | TypingEvent
    | TopicChanged
    | OwnerChanged
    | Kicked
    | Invited
)
ServerFrame: TypeAlias = Reply | Event

_encoder = msgspec.json.Encoder()
_server_decoder = msgspec.json.Decoder(ServerFrame)
_any_decoder = msgspec.json.Decoder()


def encode(frame: _Frame) -> bytes:
    """Encode a frame to UTF-8 JSON bytes, ready to send as a text frame."""
    return _encoder.encode(frame)


def fit_to_budget(
    messages: list[Message], *, keep_newest: bool, budget: int = REPLY_BUDGET_BYTES
) -> tuple[list[Message], bool]:
    """The messages that fit in ``budget`` encoded bytes, and whether any were left out.

    A catch-up page keeps the oldest (the client asks again after the last
    one); a latest or history page keeps the newest (older ones stay to be
    paged back to). At least one message is always kept, so paging moves on.
    """
    ordered = reversed(messages) if keep_newest else iter(messages)
    kept: list[Message] = []
    used = 0
    for message in ordered:
        used += len(_encoder.encode(message)) + 1  # and the comma between
        if kept and used > budget:
            break
        kept.append(message)
    if keep_newest:
        kept.reverse()
    return kept, len(kept) < len(messages)


def decode_server_frame(data: str | bytes) -> ServerFrame:
    """Decode a frame sent by the server (for clients); raises ``msgspec.DecodeError``."""
    return _server_decoder.decode(data)


# --------------------------------------------------------------------------
# Decoding client requests
# --------------------------------------------------------------------------


class RequestDecodeError(ProtocolError):
    """A frame that could not become a request; ``request_id`` is echoed if it was valid."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | int | None):
        super().__init__(code, message)
        self.request_id = request_id


def _valid_request_id(raw: dict[str, Any]) -> str | int | None:
    value = raw.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_ID_LENGTH):
        return value
    return None


_request_decoder = msgspec.json.Decoder(Request)


def decode_request(data: str | bytes) -> Request:
    """Decode one client frame, or raise ``RequestDecodeError`` saying what is wrong.

    A well-formed frame is decoded in one pass straight into its struct; only
    a bad one takes the slower path that works out exactly what is wrong.
    """
    if isinstance(data, str):
        try:
            return _request_decoder.decode(data)
        except (msgspec.DecodeError, RecursionError):
            pass
    try:
        return _explain_bad_request(data)
    except RequestDecodeError:
        raise
    except Exception:  # anything else the decoder trips on is still just a bad frame
        raise RequestDecodeError(
            ErrorCode.BAD_REQUEST, "The frame could not be decoded.", None
        ) from None


def _explain_bad_request(data: str | bytes) -> Request:
    """Say precisely what is wrong with a frame.

    The ``id`` is recovered first so that even a broken request gets its reply
    matched; an ``id`` that is itself invalid is reported and not echoed.
    """
    if isinstance(data, bytes):
        raise RequestDecodeError(
            ErrorCode.BAD_REQUEST,
            "Binary frames are not accepted; send JSON in a text frame.",
            None,
        )
    try:
        raw = _any_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RequestDecodeError(
            ErrorCode.BAD_REQUEST, f"The frame is not valid JSON: {exc}.", None
        ) from None
    except RecursionError:
        # msgspec raises this (not DecodeError) for about 1,000 nested arrays.
        raise RequestDecodeError(
            ErrorCode.BAD_REQUEST, "The frame is nested too deeply.", None
        ) from None
    if not isinstance(raw, dict):
        raise RequestDecodeError(ErrorCode.BAD_REQUEST, "A frame must be a JSON object.", None)
    request_id = _valid_request_id(raw)
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise RequestDecodeError(
            ErrorCode.BAD_REQUEST, "Every frame needs a string field `type`.", request_id
        )
    cls = REQUEST_TYPES.get(kind)
    if cls is None:
        raise RequestDecodeError(
            ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {kind[:40]!r}.", request_id
        )
    try:
        return msgspec.convert(raw, cls)  # type: ignore[return-value]
    except msgspec.ValidationError as exc:
        raise RequestDecodeError(
            ErrorCode.BAD_REQUEST, f"Invalid {kind} request: {exc}.", request_id
        ) from None


# --------------------------------------------------------------------------
# Rules for names, passwords and text
# --------------------------------------------------------------------------

_USERNAME_RE = re.compile(rf"[A-Za-z0-9_.\-]{{{USERNAME_MIN},{USERNAME_MAX}}}")
_TEXT_FORBIDDEN_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
PASSWORD_RULES: Final = (
    f"{PASSWORD_MIN}–{PASSWORD_MAX} characters, with at least one letter, one digit "
    "and one symbol, and not containing the username"
)


def check_username(username: str) -> str:
    """Return the username if it follows the rules, else raise ``invalid_username``."""
    if not _USERNAME_RE.fullmatch(username):
        raise ProtocolError(
            ErrorCode.INVALID_USERNAME,
            f"A username is {USERNAME_MIN}–{USERNAME_MAX} characters of letters A–Z, "
            "digits, '_', '.' and '-'.",
        )
    return username


def username_key(username: str) -> str:
    """The identity of a username: case-insensitive and look-alike-insensitive.

    ``Ann`` and ``ann`` are one account, and so are ``BiII`` (capital i) and
    ``Bill``, or ``0tto`` and ``Otto``: see ``name_skeleton``.
    """
    return name_skeleton(username)


def legacy_username_key(username: str) -> str:
    """The key databases made before look-alike keys hold (lower case only)."""
    return username.lower()


def check_password(password: str, username: str) -> None:
    """Raise ``weak_password`` naming the first rule the password breaks."""
    problem = password_problem(password, username)
    if problem:
        raise ProtocolError(ErrorCode.WEAK_PASSWORD, problem)


def password_problem(password: str, username: str) -> str | None:
    """Say which password rule fails, or None; clients use it to warn early."""
    if len(password) < PASSWORD_MIN:
        return f"The password is too short: use at least {PASSWORD_MIN} characters."
    if len(password) > PASSWORD_MAX:
        return f"The password is too long: use at most {PASSWORD_MAX} characters."
    if not any(c.isalpha() for c in password):
        return "The password needs at least one letter."
    if not any(c.isdigit() for c in password):
        return "The password needs at least one digit."
    if all(c.isalnum() for c in password):
        return "The password needs at least one symbol (such as ! ? # or a space)."
    if username and username.lower() in password.lower():
        return "The password must not contain the username."
    return None


def check_room_name(room: str) -> str:
    """Return the trimmed room name (public or private), or raise ``invalid_room_name``.

    A private room is named ``~owner/name`` and a direct message ``@a+b``
    (see ``private_room_name`` and ``direct_room_name``); no public name can
    look like either, so the two namespaces never meet.
    """
    stripped = room.strip(" ")
    if stripped.startswith(PRIVATE_PREFIX) and "/" in stripped:
        owner, name = stripped[1:].split("/", 1)
        return private_room_name(_room_username(owner), check_public_room_name(name))
    if stripped.startswith(DIRECT_PREFIX) and "+" in stripped:
        first, second = stripped[1:].split("+", 1)
        return direct_room_name(_room_username(first), _room_username(second))
    return check_public_room_name(room)


PRIVATE_PREFIX: Final = "~"
DIRECT_PREFIX: Final = "@"


def private_room_name(owner: str, name: str) -> str:
    """A private room lives in its creator's namespace: ``~ann/Plans``."""
    return f"{PRIVATE_PREFIX}{owner}/{name}"


def direct_room_name(first: str, second: str) -> str:
    """The one room two users talk in privately: ``@ann+bob``, whoever opened it."""
    a, b = sorted((first, second), key=username_key)
    return f"{DIRECT_PREFIX}{a}+{b}"


def is_private_room(name: str) -> bool:
    return name.startswith((PRIVATE_PREFIX, DIRECT_PREFIX))


def direct_room_users(name: str) -> tuple[str, str] | None:
    """The two usernames of a direct-message room's name, or None for any other room."""
    if not name.startswith(DIRECT_PREFIX):
        return None
    first, second = name[1:].split("+", 1)
    return first, second


def private_room_creator(name: str) -> str | None:
    """Whose namespace a private room's name is in, or None for any other room."""
    if not name.startswith(PRIVATE_PREFIX):
        return None
    return name[1:].split("/", 1)[0]


def _room_username(name: str) -> str:
    try:
        return check_username(name)
    except ProtocolError:
        raise ProtocolError(
            ErrorCode.INVALID_ROOM_NAME,
            "A private room is named ~owner/name, and a direct message @user+user.",
        ) from None


def check_public_room_name(room: str) -> str:
    """Return the trimmed (NFC-composed) public room name, or raise ``invalid_room_name``.

    Composing first lets ``e`` + combining accent count as the letter it shows.
    Invisible characters (Unicode's default-ignorable code points, such as
    U+3164 HANGUL FILLER, which counts as a letter) are refused: ``pay`` and
    ``pay`` + filler would look the same.
    """
    name = unicodedata.normalize("NFC", room.strip(" "))
    if has_invisible(name):
        raise ProtocolError(
            ErrorCode.INVALID_ROOM_NAME, "A room name cannot contain invisible characters."
        )
    if not 1 <= len(name) <= MAX_ROOM_NAME_LENGTH or not all(
        c.isalnum() or c in " -_." for c in name
    ):
        raise ProtocolError(
            ErrorCode.INVALID_ROOM_NAME,
            f"A room name is 1–{MAX_ROOM_NAME_LENGTH} characters of letters, digits, "
            "spaces, '-', '_' and '.'.",
        )
    return name


def room_key(room: str) -> str:
    """The identity of a room name: trimmed, then as ``name_skeleton`` says.

    ``Café``, ``CAFÉ`` and ``ｃａｆé`` are one room, and so are ``pay`` spelled
    in Latin, Cyrillic (``рау``) or Greek (``ραy``) letters. A private
    room's key is its creator's username key and its name's key; a direct
    message's, the two username keys in order.
    """
    stripped = room.strip(" ")
    if stripped.startswith(PRIVATE_PREFIX) and "/" in stripped:
        owner, name = stripped[1:].split("/", 1)
        return f"{PRIVATE_PREFIX}{username_key(owner)}/{name_skeleton(name.strip(' '))}"
    if stripped.startswith(DIRECT_PREFIX) and "+" in stripped:
        keys = sorted(username_key(user) for user in stripped[1:].split("+", 1))
        return f"{DIRECT_PREFIX}{keys[0]}+{keys[1]}"
    return name_skeleton(stripped)


def legacy_room_key(room: str) -> str:
    """The key databases made before look-alike keys hold (NFKC and case folding)."""
    return unicodedata.normalize("NFKC", room.strip(" ")).casefold()


# Names that look alike are one name. Unicode's UTS #39 defines a name's
# *skeleton*: two strings that can be mistaken for each other have the same
# one. ICU's SpoofChecker (through PyICU) implements it with Unicode's own
# confusables data. The skeleton is taken after NFKC (fullwidth letters),
# then again after case folding, because case folding can turn a character
# into one that has a look-alike (and capital I is confusable with l while
# small i is not, so the first skeleton must see the original case).
# Keys are stored in the database: when the confusables data changes (a new
# ICU/Unicode version), stored keys must be recomputed (see NAME_KEY_VERSION).


@functools.cache
def _spoof_checker() -> Any:
    import icu  # PyICU; imported on first use so that importing protocol stays cheap

    return icu.SpoofChecker()


@functools.cache
def _default_ignorable() -> Any:
    import icu

    invisible = icu.UnicodeSet("[:Default_Ignorable_Code_Point:]")
    invisible.freeze()  # immutable, and faster to query
    return invisible


@functools.lru_cache(maxsize=4096)
def name_skeleton(name: str) -> str:
    """UTS #39 skeleton of a name, insensitive to case and compatibility forms."""
    checker = _spoof_checker()
    first = checker.getSkeleton(0, unicodedata.normalize("NFKC", name))
    return str(checker.getSkeleton(0, first.casefold()))


def has_invisible(name: str) -> bool:
    """True if the name holds a default-ignorable (invisible) code point."""
    invisible = _default_ignorable()
    return any(invisible.contains(c) for c in name)


def name_key_version() -> str:
    """Which confusables data made today's keys: stored keys of another version are stale."""
    import icu

    return f"uts39-skeleton/unicode-{icu.UNICODE_VERSION}"


def check_text(text: str) -> str:
    """Return the text if it may be sent, or raise ``invalid_text`` saying why."""
    if not text or not text.strip():
        raise ProtocolError(
            ErrorCode.INVALID_TEXT, "A message cannot be empty or only white space."
        )
    if len(text) > MAX_TEXT_LENGTH:
        raise ProtocolError(
            ErrorCode.INVALID_TEXT, f"A message is at most {MAX_TEXT_LENGTH} characters long."
        )
    if _TEXT_FORBIDDEN_RE.search(text):
        raise ProtocolError(
            ErrorCode.INVALID_TEXT,
            "A message cannot contain control characters other than newline and tab.",
        )
    return text


_MENTION_RE = re.compile(rf"(?<![\w@])@([A-Za-z0-9_.\-]{{{USERNAME_MIN},{USERNAME_MAX}}})")


def mentioned_keys(text: str) -> set[str]:
    """The username keys ``@name`` tokens in ``text`` name (``@Ann``, ``@ann`` alike).

    A trailing ``.`` or ``-`` ends a sentence, not a name, so ``@ann.`` names ann.
    """
    keys = set()
    for match in _MENTION_RE.finditer(text):
        name = match.group(1).rstrip(".-")
        if len(name) >= USERNAME_MIN:
            keys.add(username_key(name))
    return keys


def check_topic(topic: str) -> str:
    """A topic is one line of plain text, at most MAX_TOPIC_LENGTH characters (may be empty)."""
    topic = topic.strip()
    if len(topic) > MAX_TOPIC_LENGTH or "\n" in topic or _TEXT_FORBIDDEN_RE.search(topic):
        raise ProtocolError(
            ErrorCode.INVALID_TOPIC,
            f"A topic is one line of at most {MAX_TOPIC_LENGTH} characters, "
            "without control characters.",
        )
    return topic


def check_reason(reason: str) -> str:
    """A kick or ban reason: like a topic, clipped instead of refused."""
    reason = " ".join(_TEXT_FORBIDDEN_RE.sub(" ", reason).split())
    return reason[:MAX_REASON_LENGTH]


# --------------------------------------------------------------------------
# Times
# --------------------------------------------------------------------------


def format_time(epoch_ms: int) -> str:
    """Render milliseconds since the epoch as the contract's ISO 8601 UTC string."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_second_text(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=256)
def _second_text(seconds: int) -> str:
    """The date-and-second part, cached: a busy second formats it once, not per message."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_time(value: str) -> datetime:
    """Parse a contract time string into an aware ``datetime``."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------
# Reactions (extension)
# --------------------------------------------------------------------------

_REACTION_NAME_RE = re.compile(r":[a-z0-9_+\-]{1,32}:")


def check_reaction(reaction: str) -> str:
    """Return the reaction if it is one emoji or a short ``:name:``, else ``invalid_reaction``.

    One emoji means one grapheme cluster that Unicode's emoji data names as
    an emoji, including skin tones, flags, keycaps and ZWJ sequences (the
    ``emoji`` library keeps that data current); text with an emoji in it is
    not one.
    """
    import emoji  # the emoji data; imported on first use

    if _REACTION_NAME_RE.fullmatch(reaction) or emoji.is_emoji(reaction):
        return reaction
    raise ProtocolError(
        ErrorCode.INVALID_REACTION,
        "A reaction is one emoji (such as 👍) or a short name such as :tada: "
        "(1–32 of a–z, 0–9, '_', '+', '-').",
    )
