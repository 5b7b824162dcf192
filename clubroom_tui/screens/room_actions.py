"""What the room screen does with a chosen message: edit, delete, react, reply, copy; search.

Kept apart from ``room.py`` (a mixin of ``RoomScreen``) so that the
conversation features and these message actions can grow independently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.widgets import Static

from clubroom_tui.client import ClientError, MessagesChanged
from clubroom_tui.plain import printable
from clubroom_tui.screens.confirm import Confirm
from clubroom_tui.screens.react import ReactPicker
from clubroom_tui.screens.search import SearchPanel
from clubroom_tui.widgets.composer import Composer
from clubroom_tui.widgets.message_log import MessageLog
from protocol import HISTORY_MAX, Message, room_key

if TYPE_CHECKING:
    from clubroom_tui.client import ClubroomClient

SEARCH_COMMAND = "/search"
JUMP_PAGES = 20  # pages of history fetched at most to reach a search result
EXCERPT = 60


def excerpt(text: str) -> str:
    """The start of a message, on one line, for questions and notices."""
    line = printable(text.replace("\n", " "))
    return line if len(line) <= EXCERPT else line[: EXCERPT - 1] + "…"


class MessageActions:
    """The room screen's message actions; needs ``client``, ``room``, ``me`` and ``notice``."""

    client: ClubroomClient
    room: str
    me: str
    editing: Message | None = None
    replying: Message | None = None

    if TYPE_CHECKING:

        def query_one(self, selector: Any, expect_type: Any = None) -> Any: ...
        def notice(self, text: str) -> None: ...
        def set_focus(self, widget: Any, scroll_visible: bool = True) -> None: ...
        def hint_newer_below(self) -> None: ...
        def refresh_bindings(self) -> None: ...
        @property
        def app(self) -> Any: ...

    # -- entering and leaving the log ------------------------------------------------

    def action_choose_message(self) -> None:
        """Focus the log with the newest message chosen, now: a letter typed next acts on it."""
        log = self.query_one(MessageLog)
        self.set_focus(log)
        if log.selected is None:
            log.action_select(1)

    def back_to_writing(self) -> None:
        """Escape in the log: back to the composer at once."""
        self.set_focus(self.query_one(Composer))

    def show_changes(self, event: MessagesChanged) -> None:
        self.query_one(MessageLog).update_messages(event.messages)

    # -- acting on the chosen message ------------------------------------------------

    def on_message_log_act(self, event: MessageLog.Act) -> None:
        message = event.message
        if message.deleted:  # nothing left to copy, react to, answer, edit or delete
            self.notice("That message was deleted.")
        elif event.action == "copy":
            self.app.copy_to_clipboard(message.text)
            self.notice("Copied the message's text.")
        elif event.action == "react":
            mine = frozenset(r.emoji for r in message.reactions or [] if r.mine)
            self.app.push_screen(ReactPicker(mine), lambda emoji: self._reacted(message, emoji))
        elif event.action == "reply":
            self._start(replying=message)
        elif not self._may_change(event.action, message):
            self.notice(f"Only {printable(message.author)} can {event.action} that message.")
        elif event.action == "edit":
            self._start(editing=message)
        else:
            whose = "your" if self._is_mine(message) else f"{printable(message.author)}'s"
            question = (
                f"Delete {whose} message “{excerpt(message.text)}”? Everyone will see "
                "“message deleted” instead; the text cannot be brought back."
            )
            self.app.push_screen(
                Confirm(question, "Delete"), lambda yes: yes and self.delete_message(message)
            )

    def _is_mine(self, message: Message) -> bool:
        return message.author.casefold() == self.me.casefold()

    def _may_change(self, action: str, message: Message) -> bool:
        """The author edits and deletes; the room's owner may delete anyone's message too."""
        if self._is_mine(message):
            return True
        state = self.client.rooms.get(room_key(self.room))
        owner = state.owner if state is not None else None
        return action == "delete" and owner is not None and owner.casefold() == self.me.casefold()

    def _start(self, *, editing: Message | None = None, replying: Message | None = None) -> None:
        """Open the composer to edit (with the text in it) or to reply; Escape cancels."""
        self.editing, self.replying = editing, replying
        self.refresh_bindings()  # the footer's Escape now cancels
        composer = self.query_one(Composer)
        if editing is not None:
            composer.value = editing.text
            what = f"Editing “{excerpt(editing.text)}”"
        else:
            assert replying is not None
            what = f"Replying to {printable(replying.author)}: “{excerpt(replying.text)}”"
        self.query_one("#action-notice", Static).update(
            Text(f"{what} — Enter sends, Escape cancels")
        )
        self.query_one("#action-notice", Static).display = True
        self.set_focus(composer)  # the cursor is at the end of the text, where editing goes on

    def cancel_action(self) -> bool:
        """Leave edit or reply mode (the draft stays); False if in neither."""
        if self.editing is None and self.replying is None:
            return False
        if self.editing is not None:
            self.query_one(Composer).value = ""
        self.editing = self.replying = None
        self.refresh_bindings()
        self.query_one("#action-notice", Static).display = False
        return True

    def take_composed(self, text: str) -> bool:
        """Handle composed text that is an edit, a reply or ``/search``; False if a plain send."""
        if text.startswith(SEARCH_COMMAND + " ") or text.strip() == SEARCH_COMMAND:
            self.open_search(text[len(SEARCH_COMMAND) :].strip())
            return True
        if self.editing is not None:
            message = self.editing
            self.cancel_action()
            self.save_edit(message, text)
            return True
        return False

    def reply_target(self) -> Message | None:
        """The message the next send answers, once (the mode ends with the send)."""
        target = self.replying
        if target is not None:
            self.cancel_action()
        return target

    def resume_reply(self, target: Message | None) -> None:
        """A send that could not go: answering the same message again."""
        if target is not None:
            self._start(replying=target)

    @work(group="message-actions")
    async def save_edit(self, message: Message, text: str) -> None:
        try:
            await self.client.edit(self.room, message.id, text)
        except ClientError as exc:
            # Back into edit mode with the new text: Enter must not send it as a new message.
            self._start(editing=message)
            self.query_one(Composer).value = text
            self.notice(f"Not edited: {exc}")
            return
        self.notice("")

    @work(group="message-actions")
    async def delete_message(self, message: Message) -> None:
        try:
            await self.client.delete(self.room, message.id)
        except ClientError as exc:
            self.notice(f"Not deleted: {exc}")
            return
        self.notice("Message deleted.")

    def _reacted(self, message: Message, emoji: str | None) -> None:
        if emoji:
            mine = any(r.emoji == emoji and r.mine for r in message.reactions or [])
            self.send_reaction(message, emoji, remove=mine)

    @work(group="message-actions")
    async def send_reaction(self, message: Message, emoji: str, *, remove: bool) -> None:
        try:
            await self.client.react(self.room, message.id, emoji, remove=remove)
        except ClientError as exc:
            self.notice(f"No reaction: {exc}")

    # -- search ----------------------------------------------------------------------

    def action_search(self) -> None:
        self.open_search("")

    def open_search(self, query: str) -> None:
        self.app.push_screen(SearchPanel(self.client, self.room, query), self._search_chosen)

    def _search_chosen(self, message_id: int | None) -> None:
        if message_id is not None:
            self.jump_to(message_id)

    @work(exclusive=True, group="history")
    async def jump_to(self, message_id: int) -> None:
        """Show a message in the log, loading the history between it and what is shown."""
        log = self.query_one(MessageLog)
        for _ in range(JUMP_PAGES):
            if log.has_shown(message_id):
                self.set_focus(log)
                log.select(message_id)
                self.hint_newer_below()
                return
            oldest = log.oldest_id
            if oldest is not None and oldest < message_id:
                break  # held in the client but not drawn: cannot be (trimmed); give up
            try:
                page = await self.client.history(self.room, before=oldest, limit=HISTORY_MAX)
            except ClientError as exc:
                self.notice(f"Could not load that message: {exc}")
                return
            if not page.messages:
                break
            log.add_older(page.messages)
        self.notice("That message is too far back to show here.")
