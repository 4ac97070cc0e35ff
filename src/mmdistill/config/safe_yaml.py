"""The YAML loader of configs: :class:`yaml.SafeLoader` (plain data only: no tag ever runs code)
made stricter against files that are malformed or hostile.

* Duplicate keys are an error (PyYAML silently keeps the last one).
* A recursive alias (``a: &a [*a]``) is an error: a config is a tree of plain values.
* Aliases may not expand the document past :data:`MAX_YAML_VALUES` values: a "billion laughs"
  file of a few nested aliases (``b: [*a, *a, ...]``, ``c: [*b, *b, ...]``) would otherwise cost
  exponential time and memory in every later step that walks the data (validation, messages).
* Merge keys (``<<: *base``) keep working; keys written next to them override the merged ones.

Every refusal is a :class:`yaml.constructor.ConstructorError` carrying the line and column;
:func:`mmdistill.config.loading.read_yaml` turns it into a :class:`~mmdistill.errors.ConfigError`.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_VALUES = 100_000
"""Most values (scalars, lists, mappings, keys) a config may expand to once aliases are followed."""
_MERGE_TAG = "tag:yaml.org,2002:merge"


def check_expansion(root: yaml.Node) -> None:
    """Refuse recursive aliases and documents that expand past :data:`MAX_YAML_VALUES` values.

    One iterative walk (no recursion limit) over the node graph, which sizes each shared (aliased)
    node once: linear in the file's size even when its expansion is exponential.

    Raises:
        yaml.constructor.ConstructorError: at the anchor that recurses or the node that is too big.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()  # the current path from the root: an alias back into it is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        value = node.value if isinstance(node, yaml.CollectionNode) else []
        children = [c for pair in value for c in pair] if isinstance(node, yaml.MappingNode) else value
        if done:
            active.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_YAML_VALUES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the aliases (*name) here expand to more than {MAX_YAML_VALUES:,} values "
                    "(a 'billion laughs' bomb?); write the values out", node.start_mark)
            continue
        if id(node) in sizes:
            continue
        active.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in active:
                raise yaml.constructor.ConstructorError(
                    None, None, "this anchor (&name) contains an alias to itself, a recursive structure; a "
                    "config must be a tree of plain values: write the value out", child.start_mark)
            stack.append((child, False))


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also refuses duplicate keys, recursive aliases and alias bombs."""

    def construct_document(self, node: yaml.Node) -> Any:
        check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # '<<: *base': keys written here may override the merged ones
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool | None):
                continue  # a list or mapping as a key: SafeLoader reports "found unhashable key"
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}; keep one of them", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
