from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch.nn.utils import prune

from sweep._imports import locate
from sweep.errors import ConfigError
from sweep.pruning._nm import NMSparsity

# Keys of a method config that describe it rather than being constructor arguments.
_RESERVED = {"name", "_target_", "global", "pruning_method", "importance", "code_sha256"}
_GLOBAL_CRITERIA = {"l1": prune.L1Unstructured, "random": prune.RandomUnstructured}
# The `p` of torch.norm that LnStructured passes on; 'nuc' only works on 3-D weights (checked
# per tensor by plan_pruning).
# What torch computes and ranks by size: p >= 0 (0 counts non-zeros), inf, Frobenius, nuclear.
# A negative p (and -inf) ranks a slice by its smallest entry: one zero weight makes its
# "norm" 0, so after any earlier pruning the ranking says nothing.
_NORMS = "a number p >= 0 (the p-norm; 0 counts non-zeros), inf, 'fro' or 'nuc'"


@dataclass(frozen=True)
class PruningMethod:
    """What removes weights: a ``BasePruningMethod`` subclass and its arguments besides ``amount``.

    Args:
        name: Label recorded in the results store (``l1_unstructured``, ``my_method``...).
        cls: The pruning method class; ``None`` prunes nothing.
        kwargs: Constructor arguments other than ``amount`` (``n``, ``dim``...).
        is_global: Rank entries of all tensors in scope together (``global_unstructured``).
        importance: What the method ranks: ``magnitude`` (the weights, torch's default),
            ``taylor``, ``apoz`` or ``wanda``, measured on calibration data
            (`sweep.pruning.importance_scores`).

    Raises:
        ConfigError: ``n`` of an ``LnStructured`` method is not a norm torch computes; ``n``
            and ``m`` of an N:M method are not ints with 1 <= n < m.

    Example:
        >>> from torch.nn.utils import prune
        >>> PruningMethod("ln_structured", prune.LnStructured, {"n": 2, "dim": 0}).structured
        True
    """

    name: str
    cls: type[prune.BasePruningMethod] | None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    is_global: bool = False
    importance: str = "magnitude"

    def __post_init__(self) -> None:
        # LnStructured stores any n and fails deep in torch.norm on the first tensor
        ln = isinstance(self.cls, type) and issubclass(self.cls, prune.LnStructured)
        n = self.kwargs.get("n")
        if ln and "n" in self.kwargs and not _is_norm(n):
            raise ConfigError(f"method.n={n!r} is not a norm; accepted: {_NORMS}")
        if self.nm is not None:
            n, m = self.nm
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)):
                raise ConfigError(f"method.n={n!r}, method.m={m!r}: accepted: ints with 1 <= n < m")
            if m < 2:
                raise ConfigError(f"method.m={m} is too small; accepted: an int m >= 2 (2:4: m=4)")
            if not 1 <= n < m:
                raise ConfigError(
                    f"method.n={n} with method.m={m}: n zeros in every group of m; "
                    "accepted: 1 <= n < m (2:4: n=2, m=4)"
                )

    @property
    def nm(self) -> tuple[int, int] | None:
        """(n, m) of an N:M method (`NMSparsity`), else ``None``."""
        if not (isinstance(self.cls, type) and issubclass(self.cls, NMSparsity)):
            return None
        return self.kwargs.get("n", 2), self.kwargs.get("m", 4)

    @property
    def structured(self) -> bool:
        return self.cls is not None and self.cls.PRUNING_TYPE == "structured"

    @property
    def dim(self) -> int | None:
        return self.kwargs.get("dim") if self.structured else None

    def make(self, amount: float | int) -> prune.BasePruningMethod:
        """An instance of the method for one tensor, as ``cls.apply`` would build it."""
        return self.cls(**self.arguments(amount))

    @property
    def takes_amount(self) -> bool:
        """Whether the amount reaches the method: its constructor takes ``amount`` (N:M and
        a user's method without one prune alike whatever the amount)."""
        return self.cls is not None and "amount" in inspect.signature(self.cls).parameters

    def arguments(self, amount: float | int) -> dict[str, Any]:
        kwargs = dict(self.kwargs)
        if self.takes_amount:
            kwargs["amount"] = amount
        if kwargs.get("n") == "fro" and issubclass(self.cls, prune.LnStructured):
            # the Frobenius norm of a slice is its 2-norm; older torch (2.11) takes 'fro' of
            # a slice of 1 or 3 dims (a Linear's, a Conv2d's) as a matrix norm, and fails
            kwargs["n"] = 2
        return kwargs

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> PruningMethod:
        """Build from a ``conf/method`` node; raises `ConfigError` naming what is wrong."""
        node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        target = node.get("_target_")
        name = node.get("name") or (target.rsplit(".", 1)[-1] if target else "none")
        kwargs = {k: v for k, v in node.items() if k not in _RESERVED}
        # null is refused by check_importance: it would run magnitude under a key of its own
        importance = node.get("importance", "magnitude")
        if node.get("global"):
            criterion = node.get("pruning_method", "l1")
            method_cls = _GLOBAL_CRITERIA.get(criterion) or _import_method(
                criterion, "method.pruning_method", f"{' | '.join(_GLOBAL_CRITERIA)} | "
            )
            if method_cls.PRUNING_TYPE != "unstructured":
                raise ConfigError(
                    f"method.pruning_method={criterion!r} is {method_cls.PRUNING_TYPE}; "
                    "global pruning accepts only unstructured methods (l1, random, or your own)"
                )
            method = cls(name, method_cls, kwargs, is_global=True, importance=importance)
            _check_constructs(method)  # global_unstructured builds it with these kwargs too
            return method
        if target is None:
            return cls(name, None, {})
        method_cls = _import_method(target, "method._target_", "")
        method = cls(name, method_cls, kwargs, importance=importance)
        _check_constructs(method)
        return method


def _is_norm(n: object) -> bool:
    if isinstance(n, str):
        return n in ("fro", "nuc")
    return isinstance(n, int | float) and not isinstance(n, bool) and n >= 0


def _import_method(path: str, key: str, builtin: str) -> type[prune.BasePruningMethod]:
    try:
        obj = locate(path)
    except ImportError as e:
        reason = str(e)
        raise ConfigError(
            f"{key}={path!r} does not import ({reason}); accepted: {builtin}"
            "a dotted path to a torch.nn.utils.prune.BasePruningMethod subclass"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, prune.BasePruningMethod)):
        raise ConfigError(
            f"{key}={path!r} is not a torch.nn.utils.prune.BasePruningMethod subclass"
        )
    if getattr(obj, "PRUNING_TYPE", None) not in {"unstructured", "structured", "global"}:
        raise ConfigError(
            f"{key}={path!r} needs PRUNING_TYPE = 'unstructured', 'structured' or 'global' "
            f"(has {getattr(obj, 'PRUNING_TYPE', None)!r})"
        )
    return obj


def _check_constructs(method: PruningMethod) -> None:
    """Construct once with a harmless amount so a wrong argument fails before any training."""
    try:
        method.make(0.0)
    except TypeError as e:
        from sweep._build import unexpected_setting

        refused = unexpected_setting(method.cls, method.kwargs, e)
        if refused is not None:
            arg, params = refused
            accepted = ", ".join(p for p in params if p not in ("self", "args", "kwargs"))
            raise ConfigError(
                f"method.{arg}={method.kwargs[arg]!r} is not a setting of {method.name} "
                f"({method.cls.__qualname__}); accepted: {accepted or 'none'}"
            ) from None
        raise ConfigError(f"method {method.name!r}: {e}") from None
    except ValueError:
        pass  # a constructor may reject amount=0.0; the real amount is checked later
