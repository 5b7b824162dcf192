"""A small picker of frequent reactions, with a field for any other emoji or :name:."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from protocol import ProtocolError, check_reaction

FREQUENT = ("👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀")


class ReactPicker(ModalScreen[str | None]):
    """Choose a reaction: a button, a digit 1–8, or one typed (checked before it is sent).

    The reader's own reactions are marked; choosing one again takes it back.
    """

    AUTO_FOCUS = "#react-1"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        *(Binding(str(n), f"pick({n})", show=False) for n in range(1, len(FREQUENT) + 1)),
    ]

    def __init__(self, mine: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.mine = mine

    def compose(self) -> ComposeResult:
        with Vertical(id="react"):
            yield Static(Text("React with 1–8, or type an emoji or :name: and press Enter:"))
            with Horizontal(id="react-choices"):
                for n, emoji in enumerate(FREQUENT, start=1):
                    label = f"{emoji}✓" if emoji in self.mine else emoji
                    yield Button(label, id=f"react-{n}", name=emoji)
            # not select_on_focus: the first typed character moves the focus here,
            # and the next one must not replace it
            yield Input(
                placeholder="another emoji, or :name:", id="react-other", select_on_focus=False
            )
            yield Static(id="react-error")

    def on_key(self, event: events.Key) -> None:
        """Typing (anything but a digit 1–8) goes into the free-entry field: `:tada:` just works.

        The focus starts on the buttons so that a digit picks at once; without
        this the characters of a typed `:name:` fell on a button and vanished.
        """
        if isinstance(self.focused, Input) or not event.is_printable or event.character is None:
            return
        if event.character in "12345678" or event.character == " ":
            return  # a pick, or space pressing the focused button
        event.stop()
        event.prevent_default()
        self._type_into_field(event.character)

    def on_paste(self, event: events.Paste) -> None:
        if not isinstance(self.focused, Input):
            event.stop()
            self._type_into_field(event.text)

    def _type_into_field(self, text: str) -> None:
        field = self.query_one("#react-other", Input)
        self.set_focus(field)
        field.insert_text_at_cursor(text)

    def action_pick(self, n: int) -> None:
        if not isinstance(self.focused, Input):
            self.dismiss(FREQUENT[n - 1])

    @on(Button.Pressed)
    def _chosen(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.name)

    @on(Input.Submitted, "#react-other")
    def _typed(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(check_reaction(event.value.strip()))
        except ProtocolError as exc:
            self.query_one("#react-error", Static).update(Text(exc.message))

    def action_cancel(self) -> None:
        self.dismiss(None)
