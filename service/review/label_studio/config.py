"""A Label Studio labeling config read against the bundle: which Choices tag holds the answer,
which Image tag (and task data key) the image, and which class each choice names.

    config = ProjectConfig.parse(xml, bundle.classes)    # LabelConfigError naming what is wrong
    config.from_name, config.to_name, config.image_key   # "labels", "image", "image"
    config.classes                                       # class column of each choice, in order
    config.value(k)                                      # the choice value of class column k

A choice names a class by the value ``labelclean review`` writes (its display name, or "name
(id)" when several classes share one: ``review_labelstudio.choice_names``), by its display name
when no other class has it, or by its label id. Every choice must name a class: the reviewer's
answer to each choice becomes a verified label (ticked: present, unticked: absent), so a choice
the model does not know would be an answer nobody can use. Classes without a choice are allowed
(a project may review a few classes): those are never predicted and never verified.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from ....model.bundle import LabelClass
from ...errors import LabelConfigError, UnknownChoices
from .export import choice_names


def choice_index(classes: Sequence[LabelClass]) -> dict[str, int]:
    """Every value a choice may have -> its class column: the export's choice names first, then
    label ids, then display names shared by no other class."""
    found: dict[str, int] = {}
    counts: dict[str, int] = {}
    for c in classes:
        counts[c.name] = counts.get(c.name, 0) + 1
    for k, name in enumerate(choice_names(classes)):
        found[name] = k
    for k, c in enumerate(classes):
        found.setdefault(c.id, k)
        if counts[c.name] == 1:
            found.setdefault(c.name, k)
    return found


@dataclass(frozen=True)
class ProjectConfig:
    from_name: str  # the Choices tag's name
    to_name: str  # the Image tag's name
    image_key: str  # the task data key holding the image URL ($image -> "image")
    choices: tuple[str, ...]  # the choice values, in the config's order
    classes: tuple[int, ...]  # the class column each choice names

    def value(self, column: int) -> str | None:
        """The choice value of class ``column``, None when the config has no choice for it."""
        try:
            return self.choices[self.classes.index(column)]
        except ValueError:
            return None

    @classmethod
    def parse(cls, xml: str, classes: Sequence[LabelClass]) -> ProjectConfig:
        """The config's first Choices tag over an Image tag; LabelConfigError when there is
        none, UnknownChoices naming every choice no class answers to."""
        try:
            root = ET.fromstring(xml or "")
        except ET.ParseError as exc:
            raise LabelConfigError(f"the labeling config is not XML: {exc}") from None
        images = {e.get("name"): e.get("value", "") for e in root.iter("Image") if e.get("name")}
        for tag in root.iter("Choices"):
            to_name = tag.get("toName", "")
            if tag.get("name") and to_name in images and images[to_name].startswith("$"):
                break
        else:
            raise LabelConfigError(
                "the labeling config needs a <Choices> tag whose toName is an <Image> tag "
                'with a task data value (e.g. value="$image"), as `labelclean review` writes'
            )
        values = [c.get("value") or c.get("alias") or "" for c in tag.iter("Choice")]
        index = choice_index(classes)
        unknown = [v for v in values if v not in index]
        if unknown:
            raise UnknownChoices(unknown)
        columns = [index[v] for v in values]
        twice = sorted({classes[k].id for k in columns if columns.count(k) > 1})
        if twice:
            raise LabelConfigError(f"several choices name the same class: {', '.join(twice)}")
        if not values:
            raise LabelConfigError(f"the <Choices> tag {tag.get('name')!r} has no <Choice>")
        return cls(
            str(tag.get("name")), to_name, images[to_name][1:], tuple(values), tuple(columns)
        )
