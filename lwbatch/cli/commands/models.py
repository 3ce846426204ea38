"""`lwbatch models`: the model families lwbatch can score, and their wikis."""

from __future__ import annotations

import textwrap

import click
import cloup
import orjson

from lwbatch.protocol.catalog import Family, ModelSpec, default_catalog
from lwbatch.protocol.coverage import Coverage


@cloup.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per family, one per line.")
def models(name: str | None, as_json: bool) -> None:
    """The model families lwbatch can score, with their names, request payloads, batch
    sizes, answers and, where the model's server lists them, its wikis.

    NAME (a model, e.g. articlequality) shows that family alone, with every wiki of its
    list. Rows of a wiki outside the list are refused up front (unsupported_wiki);
    `--ignore-coverage` on score and plan sends them anyway. Which wikis a revscoring
    model is deployed on is Lift Wing's to say: an undeployed one answers 404 and its
    column gets model_not_deployed.

    \b
    Example:
      lwbatch models articlequality
    """
    from lwbatch.protocol.catalog import names_of

    catalog = default_catalog()
    families = catalog.families
    if name is not None:
        family = catalog.resolve(name).family
        families = tuple(f for f in families if f is family)
    rows = [_family_row(f, names_of(f), wikis=name is not None) for f in families]
    if as_json:
        click.echo("\n".join(orjson.dumps(row).decode() for row in rows))
        return
    width = max(len(str(r["names"])) for r in rows)
    lines = [f"{'names':<{width}}  {'payload':<28} {'batch':>5}  {'prediction':<10}  wikis"]
    for r in rows:
        # The page goes by id or by title (outlink-topic-model).
        payload = ", ".join(r["payload"]).replace("page_id", "page_id|page_title")  # type: ignore[arg-type]
        note = "  (experimental: --endpoint internal or a URL only)" if r["experimental"] else ""
        coverage = r["coverage"]
        listed = f"{coverage['count']} listed" if coverage else "-"  # type: ignore[index]
        lines.append(
            f"{r['names']:<{width}}  {payload:<28} {r['batch']:>5}  "
            f"{r['prediction']:<10}  {listed}{note}"
        )
    lines.append("")
    for kept in sorted({f.coverage for f in families if f.coverage}, key=lambda c: c.name):
        users = ", ".join(names_of(f) for f in families if f.coverage is kept)
        said = (
            f"{users}: {len(kept.wikis)} wikis, {kept.what}; read from {kept.repo} "
            f"{kept.path} at {kept.commit[:12]} ({kept.date})"
        )
        lines.append(textwrap.fill(said, width=100, subsequent_indent="  ", break_on_hyphens=False))
        if name is not None:
            lines += _listed_wikis(catalog.resolve(name), kept)
    if name is None:
        lines += [
            "WIKI is a database name: enwiki, dewiki, zh_yuewiki, enwiktionary, ...",
            "{wiki}-KIND (any WIKI-KIND above) scores each row with its own wiki's model.",
            "Out of scope (keyed by a title or a text, not a revision): article-country, "
            "langid, article-descriptions, edit-check, llm-*.",
        ]
    click.echo("\n".join(lines))


def _listed_wikis(spec: ModelSpec, listed: Coverage) -> list[str]:
    """A list's wikis, and those of them lwbatch refuses all the same (the server's code
    cannot reach them: its lookup or its host rewrite misses them)."""
    from lwbatch.wikis import wikis

    table = wikis()
    refused = {db: spec.refuses(table.from_dbname(db)) for db in sorted(listed.wikis)}
    lines = [textwrap.fill(" ".join(db for db, why in refused.items() if why is None), width=100)]
    unreachable = [f"{db}: {why}" for db, why in refused.items() if why is not None]
    if unreachable:
        lines.append(f"listed, but refused all the same ({len(unreachable)}):")
        lines += [f"  {reason}" for reason in unreachable]
    return lines


def _family_row(family: Family, names: str, *, wikis: bool) -> dict[str, object]:
    coverage = family.coverage
    described: dict[str, object] | None = None
    if coverage is not None:
        described = {
            "name": coverage.name,
            "count": len(coverage.wikis),
            "repo": coverage.repo,
            "path": coverage.path,
            "commit": coverage.commit,
            "date": coverage.date,
        }
        if wikis:
            described["wikis"] = sorted(coverage.wikis)
    return {
        "family": family.name,
        "names": names,
        "payload": list(family.payload),
        "batch": family.max_batch,
        "prediction": family.prediction,
        "probability": family.answer != "outlink",
        "experimental": family.experimental,
        "coverage": described,
    }


__all__ = ["models"]
