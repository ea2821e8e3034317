"""Many configs of one command line, each equal to Hydra's own composition, at the cost of one
composition per distinct set of group choices.

Hydra composes a config in two steps: the overrides that choose a config group
(``method=ln_structured``, ``hydra/sweeper=optuna``) build the defaults list and merge its
files; every other override (``amount=0.3``, ``+tag=x``, ``~latency``) is applied to the
merged config afterwards. The configs of a sweep's jobs, and of the grid points ``sweep.cli``
checks before a sweep starts, mostly share their group choices. `Composer` composes each set
of group choices once and applies the other overrides to a copy of it, with Hydra's own
function, as Hydra applies them: the same config, values, errors and ``hydra`` node.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

__all__ = ["Composer"]

_KEPT_LINES = 4096  # parsed override lines a composer keeps (`Composer._parse`)


class Composer:
    """``composer(overrides)`` is ``compose(overrides)``: the config Hydra composes from
    ``overrides``, composed once per distinct set of group choices among them.

    Build one with `Composer.create`, which gives ``None`` where this Hydra's loader has not
    the internals used here (then every config is composed whole).
    """

    def __init__(self, loader: Any, repo: Any, compose: Callable[[list[str]], DictConfig]):
        self._loader = loader
        self._repo = repo
        self._compose = compose
        self._parser = OverridesParser.create()
        self._composed: dict[tuple[str, ...], bytes] = {}  # group choices -> their config, pickled
        self._parsed: dict[str, Any] = {}  # override line -> its parsed Override (`_parse`)

    @classmethod
    def create(
        cls,
        loader: Any,
        config_name: str | None,
        hydra_overrides: Sequence[str],
        compose: Callable[[list[str]], DictConfig],
    ) -> Composer | None:
        """A composer of ``config_name``'s configs from the search path ``hydra_overrides``
        make (``hydra.searchpath``), each composed by ``compose(lines)``; ``None`` where this
        Hydra's loader does not expose its repository."""
        try:
            _, repo = loader._parse_overrides_and_create_caching_repo(
                config_name, list(hydra_overrides)
            )
            type(loader)._apply_overrides_to_config  # noqa: B018 - present, or compose whole
        except (AttributeError, TypeError):
            log.debug("composing every config whole", exc_info=True)
            return None
        return cls(loader, repo, compose)

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        """The config of ``overrides``, ``hydra.overrides.task`` and
        ``hydra.job.override_dirname`` included.

        Raises:
            ConfigCompositionException: As Hydra's composition raises it, for an override it
                cannot apply.
        """
        parsed = self._parse(list(overrides))
        composes = [self._composes(o) for o in parsed]
        choices = tuple(o.input_line for o, c in zip(parsed, composes, strict=True) if c)
        pickled = self._composed.get(choices)
        if pickled is None:
            # unpickling a copy takes a third of deepcopy's time (OmegaConf pickles types,
            # flags and parents)
            pickled = self._composed[choices] = pickle.dumps(self._compose(list(choices)))
        cfg = pickle.loads(pickled)
        values = [o for o, c in zip(parsed, composes, strict=True) if not c]
        try:
            type(self._loader)._apply_overrides_to_config(values, cfg)
        except OmegaConfBaseException as e:  # as Hydra's own composition reports it
            raise ConfigCompositionException().with_traceback(e.__traceback__) from e
        task = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in task]
            settings = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = _dirname(task, settings)
        return cfg

    def _parse(self, overrides: list[str]) -> list:
        """``parse_overrides(overrides)``, each line parsed once: the grammar's parser costs
        more than the rest of a job's config, and a sweep's jobs repeat most of their lines.
        Parsing is pure, and applying an override reads it only (``Override.value`` converts
        a copy)."""
        missing = [o for o in dict.fromkeys(overrides) if o not in self._parsed]
        if len(self._parsed) + len(missing) > _KEPT_LINES:
            self._parsed.clear()  # sampled values are new every job: keep the rest
            missing = list(dict.fromkeys(overrides))
        self._parsed.update(zip(missing, self._parser.parse_overrides(missing), strict=True))
        return [self._parsed[o] for o in overrides]

    def _composes(self, override: Any) -> bool:
        # what Hydra's defaults list takes (a group choice) and what only composition applies
        if override.is_hydra_override() or override.key_or_group == "hydra.searchpath":
            return True
        if isinstance(override.value(), dict):
            return False
        return self._repo.group_exists(override.key_or_group)


def _dirname(overrides: list, settings: DictConfig) -> str:
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(
        overrides=overrides,
        kv_sep=settings.kv_sep,
        item_sep=settings.item_sep,
        exclude_keys=settings.exclude_keys,
    )
