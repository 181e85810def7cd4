"""HTML pages: search (/), one image (/images/<id>), stats (/stats), classify an upload (/classify)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, current_app, render_template, request

from tinytags.core.contract import CLASSES, MIN_AGREEMENT
from tinytags.core.forest import ModelError
from webapp import services
from webapp.model import (
    UploadError,
    agreement_rows,
    card_trees,
    confusion,
    features_info,
    junk_figures,
    per_class_rows,
    precision_at,
    tag_precision,
    wild_figures,
)
from webapp.queries import (
    PAGE_ROW_CHOICES,
    PAGE_ROWS,
    SORT_LABELS,
    BadSearch,
    Search,
    parse_search,
)

bp = Blueprint("pages", __name__)

_OFFSET = re.compile(r"\d{1,12}")


def _card_context() -> dict[str, Any]:
    """What the pages show of the model card (None parts are simply not shown)."""
    card, problem = services.model().card()
    return {
        "card": card, "card_problem": problem,
        "card_trees": card_trees(card) if card else None,
        "card_rows": agreement_rows(card) if card else [],
    }


@bp.get("/")
def search_page():
    """The search page; the URL holds the whole search, so it can be shared and reloaded."""
    # offset only numbers the results shown ("51-100"); the cursor decides what they are.
    raw_offset = request.args.get("offset", "0")
    offset = int(raw_offset) if _OFFSET.fullmatch(raw_offset) else 0
    context = _card_context()
    try:
        search, answer = services.run_search(request.args, PAGE_ROWS)
        status, error = 200, None
    except BadSearch as bad:
        search, answer, status, error = Search(rows=PAGE_ROWS), None, 400, str(bad)
    if answer is not None and search.cursor == "*":
        offset = 0
    # The card's precision for the threshold in view (also when the search itself was refused).
    card = context["card"]
    precision_row = answer["model_card"] if answer else precision_at(card, search.min_agreement)
    per_tag = answer["tag_precision"] if answer else tag_precision(card, search.min_agreement, search.tags)
    step = 1 / context["card_trees"] if context["card_trees"] else 0.05
    rows_choices = sorted(set(PAGE_ROW_CHOICES) | {search.rows})
    # What search.js needs to redo both precision notes while the slider moves, without a request.
    card_data = {"trees": context["card_trees"], "rows": context["card_rows"],
                 "per_class": per_class_rows(card), "tags": list(search.tags or CLASSES)}
    return render_template(
        "search.html", search=search, answer=answer, error=error, offset=offset, classes=CLASSES,
        sort_labels=SORT_LABELS, rows_choices=rows_choices, agreement_step=round(step, 4),
        precision_row=precision_row, tag_precision=per_tag, card_data=card_data, **context,
    ), status


@bp.get("/images/<int:image_id>")
def image_page(image_id: int):
    """One image: large, its votes per class, where it came from, and images like it
    (optionally only those with a tag and agreement range: ?tags=cat&min_agreement=0.6)."""
    within = parse_search(request.args, default_rows=services.SIMILAR_ROWS, max_rows=services.MAX_SIMILAR_ROWS)
    details = services.image_details(image_id, within)
    if details is None:
        return render_template("error.html", status=404, title="No such image",
                               message=f"There is no tagged image with id {image_id}."), 404
    doc = details["doc"]
    counts = doc.get("vote_counts") or [0] * len(CLASSES)
    # agreement = votes / all trees; the counts alone miss the votes a learned model's "none" class got.
    trees = round(doc["votes"] / doc["agreement"]) if doc.get("agreement") else (sum(counts) or 1)
    solr_link = f"{current_app.config['SOLR_URL']}/select?" + urlencode(
        {"q": f"id:{doc['id']}", "fl": "*", "wt": "json"})
    return render_template(
        "image.html", doc=doc, image_url=details["image_url"], preview_url=details["preview_url"],
        similar=details["similar"], classes=CLASSES, within=within,
        votes=list(zip(CLASSES, counts)), trees=trees, solr_link=solr_link,
    )


@bp.get("/stats")
def stats_page():
    """Images per tag, the agreement histogram and the model card with its plots."""
    stats = services.stats_answer()
    context = _card_context()
    card = context["card"]
    return render_template(
        "stats.html", stats=stats, classes=CLASSES, confusion=confusion(card) if card else None,
        min_agreement=MIN_AGREEMENT, per_class=_per_class(card), junk=junk_figures(card), wild=wild_figures(card),
        features=features_info(card), rule_rows=tag_precision(card, MIN_AGREEMENT), **context,
    )


def _per_class(card: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The card's per-class precision/recall/f1, whether keyed by class name or given as a list."""
    if not card:
        return []
    table = card.get("per_class")
    if isinstance(table, list) and len(table) == len(CLASSES):
        table = dict(zip(CLASSES, table))
    if not isinstance(table, dict):
        return []
    rows = []
    for name in CLASSES:
        values = table.get(name)
        if isinstance(values, dict):
            rows.append({"tag": name, **{k: values.get(k) for k in ("precision", "recall", "f1")
                                         if isinstance(values.get(k), (int, float))}})
    return rows


@bp.route("/classify", methods=["GET", "POST"])
def classify_page():
    """Upload a picture: what the model says (or that it is no photo), how sure the card says it is, similar images."""
    context = _card_context()
    answer, error, status = None, None, 200
    if request.method == "POST":
        upload = request.files.get("image")
        if upload is None or not upload.filename:
            error, status = "Choose an image file first.", 400
        else:
            try:
                answer = services.classify_upload(upload.read(), services.SIMILAR_ROWS)
            except UploadError as bad:
                error, status = str(bad), 400
            except ModelError as missing:
                error, status = f"Classification is not available: {missing}", 503
    return render_template("classify.html", answer=answer, error=error, classes=CLASSES,
                           min_agreement=MIN_AGREEMENT, **context), status
