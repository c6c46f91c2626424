"""Typed exceptions for user errors: every message names the offending key, file or shape."""


class CoarError(Exception):
    """Base class of every error the library raises on purpose."""


class ComponentError(CoarError):
    """A component set does not match the model (unknown module, wrong unit count)."""


class StoreError(CoarError):
    """A mask/output store is missing, truncated, corrupted or incomplete."""


class StoreMismatchError(StoreError):
    """A store was reopened with settings other than those it was created with."""


class ShapeError(CoarError):
    """An array has a shape other than the one the operation needs."""


class ArgumentError(CoarError, ValueError):
    """An argument or setting is invalid: a parameter of a front-door function (coar.attribute, coar.evaluate,
    coar.edit), or a field of coar.settings' objects, named as its entry point spells it (a parameter, a --flag,
    a config key).

    ``argument`` is that name, ``problem`` what is wrong; the message is "argument: problem"."""

    def __init__(self, argument: str, message: str):
        self.argument, self.problem = argument, message
        super().__init__(f"{argument}: {message}")
