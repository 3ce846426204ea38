"""Which model a revision goes to for each output column, and the final answers that
need no request: a `{wiki}-KIND` column's model for the row's wiki, a model that cannot
score the row's wiki, a row without what the model needs, and what an earlier run
learned of whole (model, wiki)s."""

from __future__ import annotations

from collections.abc import Sequence

from lwbatch.engine.dispatch import Dispatcher
from lwbatch.engine.resume import ResumeState
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import ErrorType, Revision, Score
from lwbatch.wikis import Wiki, wikis


class Targets:
    """The model behind each column, per wiki; templates resolved once per wiki."""

    def __init__(self, specs: Sequence[ModelSpec], default_wiki: Wiki) -> None:
        self._by_name = {s.name: s for s in specs}
        self._default_wiki = default_wiki
        # (template, wiki) -> the wiki's model, or None where the family has none.
        self._concrete: dict[tuple[str, str], ModelSpec | None] = {}

    def of(self, spec: ModelSpec, item: Revision) -> ModelSpec | Score:
        """The model `item` goes to for `spec`'s column, or its final answer if none."""
        wiki = item.wiki
        if spec.is_template:
            concrete = self._concrete_for(spec, wiki.dbname)
            if concrete is None:
                return Score.failed(
                    ErrorType.UNSUPPORTED_WIKI,
                    f"{spec.name}: {wiki.dbname} has no {spec.kind} model",
                )
            spec = concrete
        elif item.key_wiki != "" and (reason := spec.refuses(wiki)) is not None:
            # Only rows that name their wiki are checked: without a wiki column, the
            # input is of whichever wiki the models name.
            return Score.failed(ErrorType.UNSUPPORTED_WIKI, reason)
        if spec.needs_page_id and item.page_id is None:
            # Not invalid_input: that marks rows no model could take (and a resume tells
            # invalid rows by it), while this row is fine for the other models.
            return Score.failed(
                ErrorType.UNSCORABLE,
                f"{spec.name} needs the revision's page_id, and this row has none",
            )
        return spec

    def restore(self, resume: ResumeState, dispatcher: Dispatcher) -> None:
        """Tell the dispatcher what an earlier run learned of whole (model, wiki)s."""
        for column, key_wiki, error in resume.refused:
            spec = self._by_name.get(column)
            if spec is None:
                continue
            wiki = wikis().from_key(key_wiki) if key_wiki else self._default_wiki
            if spec.is_template:
                concrete = self._concrete_for(spec, wiki.dbname)
                if concrete is None:
                    continue
                spec = concrete
            if error is ErrorType.MODEL_NOT_DEPLOYED:
                dispatcher.undeployed.add(spec.name)
            else:
                # The earlier run's words are in its rows; these rows say it anew.
                dispatcher.unsupported.setdefault((spec.name, wiki.dbname), "")

    def _concrete_for(self, template: ModelSpec, wiki: str) -> ModelSpec | None:
        found = (template.name, wiki)
        if found not in self._concrete:
            self._concrete[found] = template.for_wiki(wiki)
        return self._concrete[found]
