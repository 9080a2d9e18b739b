"""omniflux.Error, the one exception type of the engine, as Python sees it."""


class Error(ValueError):
    """A bad input or a failure in the engine (C++ ``omniflux::Error``).

    Attributes: ``what`` (what went wrong), ``where`` (the argument, file, tensor or config field),
    ``expected`` and ``got`` (empty when they do not apply). ``str(e)`` is the engine's own message.
    """

    def __init__(self, what: str, where: str = "", expected: str = "", got: str = ""):
        from . import _omniflux  # the engine formats the message, so Python and C++ errors read alike

        super().__init__(_omniflux._error_message(what, where, expected, got))
        self.what, self.where, self.expected, self.got = what, where, expected, got

    __module__ = "omniflux"  # shown as omniflux.Error in tracebacks

    def __reduce__(self):
        return (type(self), (self.what, self.where, self.expected, self.got))
