"""Callbacks: what hangs off the training loop (checkpoints, best epoch and early stopping, EMA, TensorBoard, plots).

Each hook is a no-op here; the loop dispatches every hook from one place (:class:`CallbackList`), in the order
the callbacks were given. A callback with state puts it in the checkpoint under its own keys
(:meth:`Callback.state_dict`) and gets it back on resume, so a resumed run continues exactly for all of them.
Modelled on Lightning's ``Callback``.

Hook order in one run: ``setup`` -> (``load_state_dict`` on resume) -> per optimizer step taken:
``on_optimizer_step`` -> per batch of logged steps: ``on_steps_logged`` -> per epoch: ``on_epoch_end`` ->
``on_train_end`` -> ``on_fit_end`` -> ``teardown`` (also after a failure).
"""

from __future__ import annotations

from torch import nn

__all__ = ["Callback", "CallbackList"]


class Callback:
    """A no-op on every hook; subclasses override what they need."""

    def setup(self, trainer) -> None:
        """The model, data, optimizers and run folder exist; nothing has trained yet."""

    def on_optimizer_step(self, trainer) -> None:
        """An optimizer step was just taken (not called for skipped ones)."""

    def on_steps_logged(self, trainer, rows: list[dict]) -> None:
        """Rows of steps.jsonl were just written (plain numbers)."""

    def on_epoch_end(self, trainer, row: dict, val) -> None:
        """An epoch finished; ``row`` is its metrics.jsonl row, ``val`` its validation result (or None)."""

    def on_train_end(self, trainer) -> None:
        """The last epoch finished; the final weights are evaluated next."""

    def on_fit_end(self, trainer, summary: dict, test) -> None:
        """The summary is written; ``test`` is the test split's result."""

    def teardown(self, trainer) -> None:
        """The run ends (finished or failed): release files."""

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The model to evaluate and save in place of ``model`` (an average of its weights ...)."""
        return model

    def state_dict(self) -> dict:
        """Checkpoint fields this callback owns -> their values."""
        return {}

    def load_state_dict(self, state: dict, trainer) -> None:
        """Restore from the checkpoint ``state`` (all of it: read your own keys)."""


class CallbackList:
    """The loop's callbacks, dispatched in order."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)

    def __iter__(self):
        return iter(self.callbacks)

    def find(self, cls: type) -> Callback | None:
        return next((c for c in self.callbacks if isinstance(c, cls)), None)

    def call(self, hook: str, *args) -> None:
        for c in self.callbacks:
            getattr(c, hook)(*args)

    def eval_model(self, model: nn.Module) -> nn.Module:
        for c in self.callbacks:
            model = c.eval_model(model)
        return model

    # Fields of the checkpoint convolab's own callbacks fill; any other callback's fields go under "callbacks".
    OWN_FIELDS = ("ema", "best", "bad_epochs")

    def state_dict(self) -> dict:
        state: dict = {}
        for c in self.callbacks:
            state.update(c.state_dict())
        others = {k: state.pop(k) for k in list(state) if k not in self.OWN_FIELDS}
        return state | ({"callbacks": others} if others else {})

    def load_state_dict(self, state: dict, trainer) -> None:
        state = {**state, **(state.get("callbacks") or {})}
        for c in self.callbacks:
            c.load_state_dict(state, trainer)
