"""Which model a revision goes to for each output column, and the final answers that
need no request: a `{wiki}-KIND` column's model for the row's wiki, a model that cannot
score the row's wiki, a row without what the model needs, and what an earlier run
learned of whole (model, wiki)s."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lwbatch.engine.faults import Refusals
from lwbatch.engine.resume import ResumeState
from lwbatch.errors import LWBatchError
from lwbatch.protocol.catalog import ModelSpec, default_catalog
from lwbatch.results import ErrorType, Revision, Score
from lwbatch.wikis import Wiki, wikipedia, wikis

log = logging.getLogger("lwbatch")


class Targets:
    """The model behind each column, per wiki; templates resolved once per wiki."""

    def __init__(self, specs: Sequence[ModelSpec], default_wiki: Wiki) -> None:
        self._by_name = {s.name: s for s in specs}
        self._default_wiki = default_wiki
        # (template, wiki) -> the wiki's model, or None where the family has none.
        self._concrete: dict[tuple[str, str], ModelSpec | None] = {}
        # (column, wiki, whether rows name it) -> its model or final answer: a few per wiki.
        self._decided: dict[tuple[str, str, bool], ModelSpec | Score] = {}

    def of(self, spec: ModelSpec, item: Revision) -> ModelSpec | Score:
        """The model `item` goes to for `spec`'s column, or its final answer if none."""
        named = item.key_wiki != ""
        memo = (spec.name, item.wiki.dbname, named)
        target = self._decided.get(memo)
        if target is None:
            target = self._decided[memo] = self._for_wiki(spec, item.wiki, named=named)
        if isinstance(target, Score):
            return target
        if target.needs_page and item.page_id is None and item.page_title is None:
            # Not invalid_input: that marks rows no model could take (and a resume tells
            # invalid rows by it), while this row is fine for the other models.
            return Score.failed(
                ErrorType.UNSCORABLE,
                f"{target.name} needs the revision's page_id or page_title, and this row "
                "has neither",
            )
        return target

    def _for_wiki(self, spec: ModelSpec, wiki: Wiki, *, named: bool) -> ModelSpec | Score:
        """What every revision of `wiki` gets for `spec`'s column (decided once)."""
        if spec.is_template:
            concrete = self._concrete_for(spec, wiki.dbname)
            if concrete is None:
                return Score.failed(
                    ErrorType.UNSUPPORTED_WIKI,
                    f"{spec.name}: {wiki.dbname} has no {spec.kind} model",
                )
            return concrete
        if named and (reason := spec.refuses(wiki)) is not None:
            # Only rows that name their wiki are checked: without a wiki column, the
            # input is of whichever wiki the models name...
            return Score.failed(ErrorType.UNSUPPORTED_WIKI, reason)
        if spec.needs_lang and (reason := spec.uncovered(wiki)) is not None:
            # ... but a model sent `lang` scores that Wikipedia, which its list may lack.
            return Score.failed(ErrorType.UNSUPPORTED_WIKI, reason)
        return spec

    def restore(self, resume: ResumeState, refusals: Refusals) -> None:
        """Tell `refusals` what an earlier run learned of whole (model, wiki)s."""
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
                refusals.not_deployed(spec.name)
            elif _listed(spec, wiki) is None:
                # The server said so (a wiki outside a model's list is refused by this
                # run's own catalogue, or sent when it has no list). The earlier run's
                # words are in its rows; these rows say it anew.
                refusals.wiki_unsupported((spec.name, wiki.dbname))

    def _concrete_for(self, template: ModelSpec, wiki: str) -> ModelSpec | None:
        found = (template.name, wiki)
        if found not in self._concrete:
            self._concrete[found] = template.for_wiki(wiki)
        return self._concrete[found]


def _listed(spec: ModelSpec, wiki: Wiki) -> str | None:
    """Why the shipped list of `spec`'s model leaves `wiki` out, or None."""
    try:
        shipped = default_catalog().resolve(spec.name)
    except LWBatchError:  # a model of another catalogue
        return None
    return shipped.uncovered(wiki)


def warn_if_models_disagree(specs: Sequence[ModelSpec], lang: str, name: str) -> None:
    """Rows that name no wiki are of whichever wiki each model names: say so when the
    models name several, as the same rev_id is then a different revision for each."""
    named: dict[str, str] = {}
    langs_wiki = wikipedia(lang).dbname
    for spec in specs:
        if spec.wiki is not None:
            named.setdefault(spec.wiki, spec.name)
        elif spec.family.wikis == "wikidata":
            named.setdefault("wikidatawiki", spec.name)
        else:  # lang-taking models and templates: `lang`'s Wikipedia
            named.setdefault(langs_wiki, spec.name)
    if len(named) > 1:
        log.warning(
            "%s names no wiki per row, and the models take each rev_id as a revision of "
            "another wiki (%s): if the rows are of one wiki, give `lang` or name a wiki "
            "column with `wiki_column`",
            name,
            ", ".join(f"{wiki} for {model}" for wiki, model in named.items()),
        )
