"""wahub's YAML loader: ``!secret``, ``!env_var``, ``!include`` and a position on every node.

``load_yaml`` returns the tree of one configuration file, made of the nodes of
``wahub.core.config.nodes``: mappings come back as ``NodeDict``, sequences as
``NodeList`` and strings as ``NodeStr``; each remembers the file and 1-based
line it was written at, so validation can point at the exact line of a
mistake, even inside an included file. Values read through ``!secret`` and
``!env_var`` are ``Secret`` strings, which error messages print as ``***``; an
``!env_var`` value also remembers its variable, for messages.

Problems that still let loading go on (an undefined secret, an unset variable,
a missing included file) are returned next to the tree so that they are
reported together with the validation problems; broken files (unreadable,
invalid YAML, duplicate keys, include cycles) raise ``ConfigError`` at once;
invalid YAML is explained by ``wahub.core.config.syntax``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from yaml.constructor import ConstructorError

from wahub.core.config.nodes import Mark, NodeDict, NodeList, NodeStr, Secret, env_secret, mark_of
from wahub.core.config.problems import format_path
from wahub.core.config.syntax import syntax_problem
from wahub.core.errors import ConfigError, ConfigProblem

#: Name of the secrets file, looked up next to the main configuration file.
SECRETS_FILE = "secrets.yaml"

_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(path: Path) -> tuple[Any, list[ConfigProblem]]:
    """Load ``path`` and what it includes; return the tree and the non-fatal problems.

    Raises ``ConfigError`` for an unreadable file, invalid YAML, a duplicate
    key or an include cycle.
    """
    context = _LoadContext(secrets_file=path.parent / SECRETS_FILE)
    tree = _load_file(path, context, include_stack=(), base_path=())
    return tree, context.problems


@dataclass
class _LoadContext:
    """What the files loaded by one ``load_yaml`` call share."""

    secrets_file: Path
    problems: list[ConfigProblem] = field(default_factory=list)
    secrets: dict[Any, Any] | None = None
    secrets_exist: bool = False
    loading_secrets: bool = False

    def problem(self, mark: Mark, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(mark.file, mark.line, path, message))

    def secret(self, name: str, mark: Mark, path: str) -> Secret:
        if self.loading_secrets:
            self.problem(mark, path, f"!secret cannot be used inside {SECRETS_FILE}")
            return Secret("", *mark)
        secrets = self._load_secrets()
        if name not in secrets:
            missing = "" if self.secrets_exist else " (file not found)"
            self.problem(mark, path, f"secret '{name}' is not defined in {self.secrets_file}{missing}")
            return Secret("", *mark)
        value = secrets[name]
        if isinstance(value, (dict, list)):
            kind = "mapping" if isinstance(value, dict) else "list"
            self.problem(mark, path, f"secret '{name}' in {self.secrets_file} must be a single value, not a {kind}")
            return Secret("", *mark)
        return Secret("" if value is None else str(value), *mark)

    def _load_secrets(self) -> dict[Any, Any]:
        if self.secrets is not None:
            return self.secrets
        self.secrets = {}
        if not self.secrets_file.exists():
            return self.secrets
        self.secrets_exist = True
        self.loading_secrets = True
        try:
            tree = _load_file(self.secrets_file, self, include_stack=(), base_path=())
        finally:
            self.loading_secrets = False
        if tree is not None and not isinstance(tree, dict):
            problem = ConfigProblem(str(self.secrets_file), 1, "", "secrets must be a mapping of names to values")
            raise ConfigError([problem])
        self.secrets = tree or {}
        return self.secrets


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = "file not found"
    except UnicodeDecodeError:
        message = "cannot read the file: it is not UTF-8 text"
    except OSError as err:
        message = f"cannot read the file: {err.strerror or err}"
    raise ConfigError([ConfigProblem(str(path), None, "", message)])


def _load_file(path: Path, context: _LoadContext, include_stack: tuple[Path, ...], base_path: tuple[Any, ...]) -> Any:
    text = _read(path)
    loader = _loader_class()(text, _Source(str(path), context, (*include_stack, path.resolve()), base_path))
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise ConfigError([syntax_problem(str(path), text, err)]) from None
    finally:
        loader.dispose()


class _Source(NamedTuple):
    """What a loader knows about the file it reads."""

    file: str
    context: _LoadContext
    include_stack: tuple[Path, ...]
    base_path: tuple[Any, ...]


class _Loader(yaml.SafeLoader):
    """Safe loader building position-aware nodes; tags are registered by ``_loader_class``."""

    def __init__(self, stream: str, source: _Source) -> None:
        super().__init__(stream)
        self.source = source
        self.path: list[Any] = list(source.base_path)

    def mark(self, node: yaml.Node) -> Mark:
        return Mark(self.source.file, node.start_mark.line + 1)

    def construct_node_str(self, node: yaml.Node) -> NodeStr:
        return NodeStr(self._scalar(node), *self.mark(node))

    def construct_node_list(self, node: yaml.Node) -> NodeList:
        if not isinstance(node, yaml.SequenceNode):
            raise ConstructorError(None, None, "expected a sequence", node.start_mark)
        result = NodeList(file=self.source.file, line=node.start_mark.line + 1)
        for index, item_node in enumerate(node.value):
            item = self._child(index, item_node)
            result.append(item)
            result.item_marks.append(mark_of(item) or self.mark(item_node))
        return result

    def construct_node_dict(self, node: yaml.Node) -> NodeDict:
        if not isinstance(node, yaml.MappingNode):
            raise ConstructorError(None, None, "expected a mapping", node.start_mark)
        own_count = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
        self.flatten_mapping(node)
        merged_count = len(node.value) - own_count
        result = NodeDict(self.source.file, node.start_mark.line + 1)
        own_marks: dict[Any, Mark] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=True)
            key_mark = self.mark(key_node)
            if not _hashable(key):
                raise ConstructorError(None, None, "a mapping key must be a single value", key_node.start_mark)
            if index >= merged_count:
                # Keys pulled in by a `<<` merge may be overridden; written keys may not repeat.
                if key in own_marks:
                    self._duplicate(key, key_mark, own_marks[key])
                own_marks[key] = key_mark
            value = self._child(key, value_node)
            result[key] = value
            result.key_marks[key] = key_mark
            result.value_marks[key] = mark_of(value) or self.mark(value_node)
        return result

    def _duplicate(self, key: Any, mark: Mark, first: Mark) -> None:
        name = "***" if isinstance(key, Secret) else str(key)
        where = f"line {first.line}" if first.file == mark.file else f"{first.file}:{first.line}"
        problem = ConfigProblem(mark.file, mark.line, "", f"key '{name}' appears twice (first at {where})")
        raise ConfigError([problem])

    def construct_secret(self, node: yaml.Node) -> Secret:
        name = self._scalar(node).strip()
        return self.source.context.secret(name, self.mark(node), format_path(self.path))

    def construct_env_var(self, node: yaml.Node) -> Secret:
        parts = self._scalar(node).split(maxsplit=1)
        mark = self.mark(node)
        if not parts:
            self.source.context.problem(mark, format_path(self.path), "!env_var needs a variable name")
            return Secret("", *mark)
        name = parts[0]
        value = os.environ.get(name)
        if value is not None:
            return env_secret(value, mark, f"from environment variable {name}")
        if len(parts) == 2:
            return env_secret(parts[1], mark, f"the default of !env_var {name}, which is not set")
        message = f"environment variable '{name}' is not set and has no default"
        self.source.context.problem(mark, format_path(self.path), message)
        return env_secret("", mark, f"from environment variable {name}")

    def construct_include(self, node: yaml.Node) -> Any:
        relative = self._scalar(node).strip()
        mark = self.mark(node)
        target = Path(self.source.file).parent / relative
        if target.resolve() in self.source.include_stack:
            chain = " -> ".join(str(path) for path in (*self.source.include_stack, target.resolve()))
            raise ConfigError([ConfigProblem(mark.file, mark.line, "", f"include cycle: {chain}")])
        if not target.exists():
            message = f"included file '{relative}' not found (looked for {target})"
            self.source.context.problem(mark, format_path(self.path), message)
            return None
        return _load_file(target, self.source.context, self.source.include_stack, tuple(self.path))

    def _child(self, step: Any, node: yaml.Node) -> Any:
        self.path.append(step)
        try:
            return self.construct_object(node, deep=True)
        finally:
            self.path.pop()

    def _scalar(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise ConstructorError(None, None, f"{node.tag} takes a single value", node.start_mark)
        return str(self.construct_scalar(node))


def _hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _loader_class() -> type[_Loader]:
    """A fresh loader class, so registering tags never touches a shared class."""

    class Loader(_Loader):
        pass

    Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_node_str)
    Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_node_list)
    Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_node_dict)
    Loader.add_constructor("!secret", _Loader.construct_secret)
    Loader.add_constructor("!env_var", _Loader.construct_env_var)
    Loader.add_constructor("!include", _Loader.construct_include)
    return Loader
