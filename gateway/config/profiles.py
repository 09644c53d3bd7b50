"""Device profiles: reusable register maps, one YAML file per sensor model.

``profile: NAME`` on a device loads ``NAME.yaml`` from the first directory that has it:
``gateway.profile_dirs`` (relative to the config file), ``<config dir>/profiles``,
``/etc/sensegate/profiles``, then the profiles shipped inside the package
(``gateway/config/sensor_profiles``, package data: a wheel carries them). A profile holds
``model``, optional ``description`` and ``manufacturer``, device-level defaults
(`schema.PROFILE_DEFAULTS`) and ``points``. Issues
inside a profile point into the profile file itself. Each profile file is read and
validated once per load, however many devices use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import schema
from gateway.config import source as yamlsrc
from gateway.config.schema import Section
from gateway.config.source import Node, describe
from gateway.core.errors import ConfigIssue

SYSTEM_DIR = "/etc/sensegate/profiles"
SHIPPED_DIR = str(Path(__file__).resolve().parent / "sensor_profiles")


@dataclass(slots=True)
class Profile:
    name: str
    path: str
    section: Section  # the validated profile file
    points: list[Any]  # Section per valid point mapping (INVALID for the others)

    @property
    def is_serial(self) -> bool:
        """A profile with a ``pattern`` is for serial-line sensors; the others are Modbus."""
        return self.section.given("pattern")


def search_dirs(first: list[str]) -> list[str]:
    """Directories searched for profiles, in order: ``first`` (``gateway.profile_dirs`` and the
    config file's ``profiles/``), ``/etc/sensegate/profiles``, then the package's own; each
    once (``/etc/sensegate/profiles`` is both for the installed service)."""
    dirs = [os.path.normpath(d) for d in (*first, SYSTEM_DIR, SHIPPED_DIR)]
    return list(dict.fromkeys(dirs))


def available(dirs: list[str]) -> list[str]:
    """Profile names found in ``dirs`` (for 'did you mean')."""
    names: set[str] = set()
    for d in dirs:
        try:
            names.update(e[:-5] for e in os.listdir(d) if e.endswith(".yaml"))
        except OSError:
            continue
    return sorted(names)


class ProfileLoader:
    def __init__(self, dirs: list[str], env: Mapping[str, str]) -> None:
        self.dirs = search_dirs(dirs)
        self.env = env
        self._by_path: dict[str, Profile | None] = {}
        self._by_name: dict[str, str | None] = {}

    def find(self, name: str) -> str | None:
        """The path of ``NAME.yaml`` in the first directory that has it."""
        if name not in self._by_name:
            found = None
            for d in self.dirs:
                candidate = os.path.join(d, f"{name}.yaml")
                if os.path.isfile(candidate):
                    found = candidate
                    break
            self._by_name[name] = found
        return self._by_name[name]

    def load(
        self, name: str, at: Node, path: str, issues: list[ConfigIssue],
    ) -> Profile | None:
        """The profile ``name``, or None after an issue at ``at`` (the ``profile:`` value)."""
        file = self.find(name)
        if file is None:
            hint = schema.did_you_mean(name, available(self.dirs))
            searched = ", ".join(self.dirs)
            issues.append(at.issue(path, f"profile {describe(at)} not found in {searched}"
                                         f"{hint}"))
            return None
        return self.load_file(file, issues, name)

    def load_file(
        self, file: str, issues: list[ConfigIssue], name: str | None = None,
    ) -> Profile | None:
        """Read and validate one profile file (once; later calls return the same Profile)."""
        if file in self._by_path:
            return self._by_path[file]
        profile = None
        node = yamlsrc.load(file, self.env, issues)
        if node is None and not any(i.file == file for i in issues):
            issues.append(ConfigIssue(file, 1, 1, "", "the profile is empty"))
        if node is not None:
            data = schema.validate(node, schema.PROFILE, "", issues)
            if isinstance(data, Section):
                points = data.get("points") or []
                stem = Path(file).name.removesuffix(".yaml")
                profile = Profile(name or stem, file, data, list(points))
        self._by_path[file] = profile
        return profile


def check_profile(path: str, env: Mapping[str, str] | None = None) -> list[ConfigIssue]:
    """Every issue of one profile file on its own (for tests and `sensegate check`)."""
    from gateway.config.load import check_profile as check

    return check(path, env)
