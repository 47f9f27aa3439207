"""A small configuration system in the style of ``lsst.pex.config``.

Fields are declared on :class:`Config` subclasses and validated on assignment: a wrong type, a
value outside a ``ChoiceField``'s allowed set or one that fails a field's ``check`` raises
:class:`~jaxdiffim.errors.InvalidInputError` naming the field and what is allowed; assigning an
unknown attribute raises too (a typo never goes unnoticed). ``ConfigurableField`` nests a
subtask's config (with its ``target``), ``ConfigChoiceField`` a registry of alternatives
reached as ``field.name`` / ``field.active`` (ip_diffim's ``makeKernel.kernel.name = "AL"``).
"""

import copy

from ..errors import InvalidInputError

__all__ = [
    "Config",
    "Field",
    "ChoiceField",
    "ListField",
    "ConfigField",
    "ConfigurableField",
    "ConfigChoiceField",
    "FieldValidationError",
]


class FieldValidationError(InvalidInputError):
    """A config field was given a value it does not accept (``pex_config``'s name)."""


class Field:
    """A typed config field.

    Parameters
    ----------
    doc : str
    dtype : type
        ``int`` values are accepted for ``float`` fields.
    default : object
    check : callable, optional
        ``check(value) -> bool``.
    optional : bool
        ``None`` allowed.
    """

    def __init__(self, doc, dtype, default=None, check=None, optional=False):
        self.doc, self.dtype, self.default = doc, dtype, default
        self.check, self.optional = check, optional
        self.name = None

    def __set_name__(self, owner, name):
        self.name = name

    def _convert(self, value, config):
        if value is None:
            if self.optional:
                return None
            raise FieldValidationError(f"{self._where(config)} may not be None.")
        if self.dtype is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.dtype is int and isinstance(value, bool):
            raise FieldValidationError(f"{self._where(config)} must be an int, got {value!r}.")
        if not isinstance(value, self.dtype):
            raise FieldValidationError(
                f"{self._where(config)} must be of type {self.dtype.__name__}, got {value!r}."
            )
        return value

    def _where(self, config):
        return f"{type(config).__name__}.{self.name}"

    def validate_value(self, value, config):
        value = self._convert(value, config)
        if self.check is not None and value is not None and not self.check(value):
            raise FieldValidationError(
                f"{self._where(config)}={value!r} fails its check: {self.doc}"
            )
        return value

    def make_default(self):
        return copy.deepcopy(self.default)

    def __get__(self, config, owner=None):
        if config is None:
            return self
        return config._values[self.name]

    def __set__(self, config, value):
        if config._frozen:
            raise FieldValidationError(f"{self._where(config)}: this config is frozen.")
        config._values[self.name] = self.validate_value(value, config)


class ChoiceField(Field):
    """A field whose value must be one of ``allowed`` (a dict ``{value: doc}``)."""

    def __init__(self, doc, dtype, allowed, default=None, optional=False):
        super().__init__(doc, dtype, default, optional=optional)
        self.allowed = dict(allowed)

    def validate_value(self, value, config):
        value = self._convert(value, config)
        if value is not None and value not in self.allowed:
            raise FieldValidationError(
                f"{self._where(config)}={value!r} is not allowed; allowed values: "
                f"{', '.join(repr(a) for a in self.allowed)}."
            )
        return value


class ListField(Field):
    """A list of ``dtype`` items (stored as a list; tuples accepted)."""

    def __init__(self, doc, dtype, default=(), check=None, optional=False, length=None):
        super().__init__(doc, dtype, list(default), check, optional)
        self.length = length

    def validate_value(self, value, config):
        if value is None and self.optional:
            return None
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise FieldValidationError(f"{self._where(config)} must be a list, got {value!r}.")
        items = [Field._convert(self, v, config) for v in value]
        if self.length is not None and len(items) != self.length:
            raise FieldValidationError(
                f"{self._where(config)} must have {self.length} items, got {len(items)}."
            )
        if self.check is not None and not all(self.check(v) for v in items):
            raise FieldValidationError(f"{self._where(config)}={items!r} fails its check.")
        return items


class ConfigField(Field):
    """A nested config of class ``dtype``."""

    def __init__(self, doc, dtype, default=None):
        super().__init__(doc, dtype, default)

    def make_default(self):
        return self.dtype() if self.default is None else copy.deepcopy(self.default)

    def validate_value(self, value, config):
        if not isinstance(value, self.dtype):
            raise FieldValidationError(
                f"{self._where(config)} must be a {self.dtype.__name__}, got {value!r}."
            )
        return value


class ConfigurableField(ConfigField):
    """A subtask's config; ``config.<name>.target`` is the subtask class.

    Parameters
    ----------
    doc : str
    target : type
        The Task class (its ``ConfigClass`` is the config type, unless ``ConfigClass`` is given).
    ConfigClass : type, optional
    """

    def __init__(self, doc, target, ConfigClass=None):  # noqa: N803 - pex_config's name
        cls = ConfigClass if ConfigClass is not None else target.ConfigClass
        super().__init__(doc, cls)
        self.target = target

    def make_default(self):
        value = self.dtype()
        object.__setattr__(value, "target", self.target)
        return value

    def validate_value(self, value, config):
        value = super().validate_value(value, config)
        object.__setattr__(value, "target", getattr(value, "target", self.target))
        return value


class _Choice:
    """The value of a :class:`ConfigChoiceField`: one config per registered name."""

    def __init__(self, field, owner):
        object.__setattr__(self, "_field", field)
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_configs", {k: v() for k, v in field.typemap.items()})
        object.__setattr__(self, "_name", field.default)

    @property
    def name(self):
        return self._name

    @name.setter
    def name(self, value):
        if self._owner._frozen:
            raise FieldValidationError(
                f"{type(self._owner).__name__}.{self._field.name}: this config is frozen."
            )
        if value not in self._configs:
            raise FieldValidationError(
                f"{type(self._owner).__name__}.{self._field.name}.name={value!r} is not allowed; "
                f"allowed values: {', '.join(repr(k) for k in self._configs)}."
            )
        object.__setattr__(self, "_name", value)

    @property
    def active(self):
        """The config of the chosen name."""
        return self._configs[self._name]

    def __getitem__(self, name):
        return self._configs[name]

    def __setattr__(self, key, value):
        if key == "name":
            type(self).name.fset(self, value)
        else:
            raise AttributeError(f"Set .name or a field of .active, not {key!r}.")

    def __deepcopy__(self, memo):
        new = _Choice.__new__(_Choice)
        object.__setattr__(new, "_field", self._field)
        object.__setattr__(new, "_owner", self._owner)
        object.__setattr__(new, "_configs", copy.deepcopy(self._configs, memo))
        object.__setattr__(new, "_name", self._name)
        return new

    def validate(self):
        self.active.validate()


class ConfigChoiceField(Field):
    """Choose one of several configs by name (``typemap``: ``{name: ConfigClass}``)."""

    def __init__(self, doc, typemap, default):
        super().__init__(doc, _Choice, default)
        self.typemap = dict(typemap)

    def make_default(self):
        raise NotImplementedError  # built per instance in Config.__init__

    def __set__(self, config, value):
        raise FieldValidationError(
            f"{self._where(config)}: set {self.name}.name or fields of {self.name}.active."
        )


class Config:
    """Base class of configs: fields declared as class attributes; ``setDefaults`` hook.

    Examples
    --------
    >>> config = AlardLuptonSubtractTask.ConfigClass()           # doctest: +SKIP
    >>> config.mode = "auto"                                     # doctest: +SKIP
    >>> config.makeKernel.kernel.active.spatialKernelOrder = 2   # doctest: +SKIP
    """

    def __init__(self, **kwargs):
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_frozen", False)
        for name, field in self._fields().items():
            if isinstance(field, ConfigChoiceField):
                self._values[name] = _Choice(field, self)
            else:
                value = field.make_default()
                self._values[name] = value if value is None else field.validate_value(value, self)
        self.setDefaults()
        for key, value in kwargs.items():
            setattr(self, key, value)

    @classmethod
    def _fields(cls):
        out = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Field):
                    out[name] = value
        return out

    def setDefaults(self):  # noqa: N802 - pex_config's name
        """Subclass hook to change the defaults of nested configs."""

    def __setattr__(self, name, value):
        if name in self._fields():
            object.__setattr__(self, name, value)
        elif name == "target":
            object.__setattr__(self, name, value)
        else:
            raise AttributeError(
                f"{type(self).__name__} has no field {name!r}; fields: {sorted(self._fields())}."
            )

    def validate(self):
        """Check cross-field rules (subclasses extend); nested configs are validated too."""
        for name in self._fields():
            value = self._values[name]
            if isinstance(value, (Config, _Choice)):
                value.validate()

    def freeze(self):
        object.__setattr__(self, "_frozen", True)
        for value in self._values.values():
            if isinstance(value, Config):
                value.freeze()
            elif isinstance(value, _Choice):
                for cfg in value._configs.values():
                    cfg.freeze()

    def toDict(self):  # noqa: N802
        out = {}
        for name, value in self._values.items():
            if isinstance(value, Config):
                out[name] = value.toDict()
            elif isinstance(value, _Choice):
                out[name] = {
                    "name": value.name,
                    **{k: c.toDict() for k, c in value._configs.items()},
                }
            else:
                out[name] = copy.deepcopy(value)
        return out

    def items(self):
        return self._values.items()

    def copy(self):
        """An unfrozen deep copy (nested configs unfrozen too)."""
        new = copy.deepcopy(self)
        new._unfreeze()
        return new

    def _unfreeze(self):
        object.__setattr__(self, "_frozen", False)
        for value in self._values.values():
            if isinstance(value, Config):
                value._unfreeze()
            elif isinstance(value, _Choice):
                for cfg in value._configs.values():
                    cfg._unfreeze()

    def __eq__(self, other):
        return type(self) is type(other) and self.toDict() == other.toDict()

    def __repr__(self):
        return f"{type(self).__name__}({self.toDict()!r})"
