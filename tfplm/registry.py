"""An explicit registry: names map to factories, added by a plain function call."""


class Registry:
    """Named factories, e.g. experiments. Nothing registers itself on import.

    Example:
    >>> experiments = Registry("experiment")
    >>> experiments.register("demo", dict)
    >>> experiments.get("demo")(a=1)
    {'a': 1}
    """

    def __init__(self, kind):
        self.kind = kind
        self._factories = {}

    def register(self, name, factory):
        if name in self._factories:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._factories[name] = factory

    def get(self, name):
        if name not in self._factories:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._factories[name]

    def names(self):
        return sorted(self._factories)

    def values(self):
        """The registered values, by name."""
        return [self._factories[name] for name in self.names()]

    def __contains__(self, name):
        return name in self._factories
