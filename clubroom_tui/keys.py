"""Keys and pastes reach the focused widget one at a time, in the order they were pressed.

Why this exists: Textual's App hands each key to the focused widget by posting
it to that widget's own message queue and goes straight on to the next key.
The widget inserts printable characters in its own queue, but a key bound to
an action (Enter → submit, Backspace, a focus change) bubbles back up to the
App's queue and runs there, later. Keys typed at machine speed therefore
overtake Enter: ``join3⏎join4`` became ``join3join`` + ``4``, and on the login
form ``alice⏎abc`` put ``abc`` in the username field because the focus moved
only after the App had already routed ``abc``.

``InOrderKeys`` delivers every key (and every paste) inside the App's own task
and finishes it completely — the widget's handlers, each ancestor's, then the
bindings — before it looks at the next one. Whatever Enter does synchronously
(take the text, clear the box, move the focus) is therefore in place before
the next key is routed, and the next key goes to whatever has the focus now.
Widgets must do the rest of their work (the network) in workers, so that a key
never waits for the server.
"""

from __future__ import annotations

from textual import events
from textual._callback import invoke
from textual.app import App
from textual.dom import DOMNode


class InOrderKeys(App[None]):
    """An App whose keys and pastes are handled strictly one after the other."""

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded and not self._minimizing(event):
            self.app_focus = True
            if await self._check_bindings(event.key, priority=True):
                return
            await self._deliver(event)
            return
        if isinstance(event, events.Paste) and not event.is_forwarded:
            await self._deliver(event)
            return
        await super().on_event(event)

    def _minimizing(self, event: events.Key) -> bool:
        """Escape on a maximized widget is Textual's own business; leave it to the App."""
        return (
            self.screen.maximized is not None and event.key == "escape" and self.escape_to_minimize
        )

    async def _deliver(self, event: events.Key | events.Paste) -> None:
        """Run the event through the focused widget and its ancestors now, then the bindings."""
        event._set_forwarded()
        node: DOMNode | None = self.focused or self.screen
        while node is not None and node is not self:
            event._no_default_action = False
            with node._context():
                for _cls, method in node._get_dispatch_methods(event.handler_name, event):
                    await invoke(method, event)
            if event._stop_propagation:
                return
            node = node._parent
        if isinstance(event, events.Key):
            await self._on_key(event)  # the App's bindings, from the focused widget upwards
