"""An in-memory search engine for argilla-server 2.8, so tests need no Elasticsearch.

Runs inside the server's own virtual environment (see `launcher.py`); nothing in our
project imports it. The server asks for a new engine instance per request, so the
documents live in one module-level store that every instance shares; the server runs a
single event loop and no method awaits while it changes the store, so no locking is needed.

Documents are plain dicts built from the ORM objects the server hands over, holding what the
Elasticsearch engine indexes: record status, external id, timestamps, text of the non-image
fields, metadata, responses (by response id), suggestions (by question name) and vectors.

Supported: listing, text queries (every word of the query must occur in the field text,
case-insensitively; no query-string syntax), terms and range filters on metadata, record
properties, suggestions and responses (including the `pending` response status, per user
or overall), sorting on the same scopes (missing values last), dataset and user progress,
metadata metrics, and cosine similarity search over stored vectors. Not supported: the
per-user random ordering the Elasticsearch engine applies to annotators' record queues
(results keep insertion order), and full query-string syntax.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from argilla_server.enums import MetadataPropertyType, SimilarityOrder, SortOrder
from argilla_server.search_engine.base import (
    AndFilter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)

ENGINE_NAME = "inmemory"

Document = dict[str, Any]

# dataset id -> record id -> document; and record id -> dataset id for the updates that
# only carry a record id (responses, suggestions).
_INDEXES: dict[UUID, dict[UUID, Document]] = {}
_RECORD_DATASET: dict[UUID, UUID] = {}


def register() -> None:
    """Make the engine selectable with `ARGILLA_SEARCH_ENGINE=inmemory`."""
    SearchEngine.register(engine_name=ENGINE_NAME)(InMemorySearchEngine)


def _plain(value: Any) -> Any:
    """Enum members as their values, everything else unchanged."""
    return getattr(value, "value", value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return [_plain(value)]


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    """A key that orders numbers, datetimes and the rest without comparing across types."""
    number = _as_number(value)
    if number is not None:
        return (0, number)
    if isinstance(value, datetime):
        return (1, value.isoformat())
    return (2, str(value))


def _field_texts(record: Any, dataset: Any) -> dict[str, str]:
    """The searchable text of a record's fields; image fields are left out, as
    Elasticsearch does (they are data URIs or URLs, not text)."""
    values: dict[str, Any] = dict(record.fields or {})
    try:
        image_fields = {field.name for field in dataset.fields if field.is_image}
    except Exception:  # the fields relationship was not loaded: guess from the values
        image_fields = {
            name
            for name, value in values.items()
            if isinstance(value, str) and value.startswith(("data:image", "http://", "https://"))
        }
    texts = {}
    for name, value in values.items():
        if name in image_fields or value is None:
            continue
        texts[name] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return texts


def _response_document(response: Any) -> Document:
    values = response.values or {}
    return {
        "id": response.id,
        "user_id": response.user_id,
        "status": _plain(response.status),
        "values": {question: (value or {}).get("value") for question, value in values.items()},
    }


def _suggestion_document(suggestion: Any) -> Document:
    return {
        "value": suggestion.value,
        "score": suggestion.score,
        "agent": suggestion.agent,
        "type": _plain(suggestion.type),
    }


def _record_document(dataset: Any, record: Any) -> Document:
    return {
        "id": record.id,
        "external_id": record.external_id,
        "status": _plain(record.status),
        "inserted_at": record.inserted_at,
        "updated_at": record.updated_at,
        "fields": _field_texts(record, dataset),
        "metadata": dict(record.metadata_ or {}),
        "responses": {response.id: _response_document(response) for response in record.responses},
        "suggestions": {
            suggestion.question.name: _suggestion_document(suggestion)
            for suggestion in record.suggestions
        },
        "vectors": {vector.vector_settings_id: list(vector.value) for vector in record.vectors},
    }


def _document(record_id: UUID) -> Document | None:
    dataset_id = _RECORD_DATASET.get(record_id)
    if dataset_id is None:
        return None
    return _INDEXES.get(dataset_id, {}).get(record_id)


def _responses_in_scope(document: Document, scope: Any) -> list[Document]:
    responses = list(document["responses"].values())
    if scope.user is not None:
        responses = [r for r in responses if r["user_id"] == scope.user.id]
    return responses


def _scope_values(document: Document, scope: Any) -> list[Any]:
    """The values a filter or sort on `scope` looks at, for one document."""
    if isinstance(scope, MetadataFilterScope):
        return _as_list(document["metadata"].get(scope.metadata_property))
    if isinstance(scope, RecordFilterScope):
        return _as_list(document.get(scope.property))
    if isinstance(scope, SuggestionFilterScope):
        suggestion = document["suggestions"].get(scope.question)
        return _as_list(suggestion.get(scope.property)) if suggestion else []
    if isinstance(scope, ResponseFilterScope):
        responses = _responses_in_scope(document, scope)
        if scope.question:
            return [v for r in responses for v in _as_list(r["values"].get(scope.question))]
        return [r[scope.property] for r in responses if scope.property in r]
    raise ValueError(f"unsupported filter scope {scope!r}")


def _value_matches(filter_: Any, values: Iterable[Any]) -> bool:
    if isinstance(filter_, TermsFilter):
        wanted = {str(_plain(v)) for v in filter_.values}
        return any(str(v) in wanted for v in values)
    if isinstance(filter_, RangeFilter):
        for value in values:
            number = _as_number(value)
            if number is None:
                continue
            if filter_.ge is not None and number < filter_.ge:
                continue
            if filter_.le is not None and number > filter_.le:
                continue
            return True
        return False
    raise ValueError(f"unsupported filter {filter_!r}")


def _response_status_matches(document: Document, filter_: Any) -> bool:
    """`pending` means no response (by the scope's user, or by anybody without one)."""
    wanted = {str(_plain(v)) for v in filter_.values}
    responses = _responses_in_scope(document, filter_.scope)
    want_pending = "pending" in wanted
    wanted.discard("pending")
    if want_pending and not responses:
        return True
    if wanted:
        return any(r["status"] in wanted for r in responses)
    return not want_pending


def _matches(document: Document, filter_: Any) -> bool:
    if isinstance(filter_, AndFilter):
        return all(_matches(document, f) for f in filter_.filters)
    scope = filter_.scope
    if (
        isinstance(scope, ResponseFilterScope)
        and not scope.question
        and scope.property == "status"
        and isinstance(filter_, TermsFilter)
    ):
        return _response_status_matches(document, filter_)
    if isinstance(scope, ResponseFilterScope) and not scope.question:
        raise ValueError(f"unsupported response filter {filter_!r}")
    return _value_matches(filter_, _scope_values(document, scope))


def _text_score(document: Document, dataset: Any, query: Any) -> float | None:
    """None when the document does not match; otherwise how many times the words occur."""
    text_query = TextQuery(q=query) if isinstance(query, str) else query
    if text_query.field:
        texts = [document["fields"].get(text_query.field) or ""]
    else:
        texts = list(document["fields"].values())
    haystack = "\n".join(texts).lower()
    words = [w.strip('"+*').lower() for w in str(text_query.q).split()]
    words = [w for w in words if w]
    if not words:
        return 1.0
    counts = [haystack.count(word) for word in words]
    if not all(counts):
        return None
    return float(sum(counts))


def _sorted(documents: list[Document], sort: list[Any]) -> list[Document]:
    """Stable multi-key sort, least significant key first; documents without a value last."""
    for order in reversed(sort):
        keyed: list[tuple[Any, Document]] = []
        missing: list[Document] = []
        for document in documents:
            values = _scope_values(document, order.scope)
            numbers = [n for n in (_as_number(v) for v in values) if n is not None]
            if numbers and len(numbers) == len(values):
                keyed.append((_sort_key(sum(numbers) / len(numbers)), document))
            elif values:
                keyed.append((min(_sort_key(v) for v in values), document))
            else:
                missing.append(document)
        descending = _plain(order.order) == _plain(SortOrder.desc)
        keyed.sort(key=lambda item: item[0], reverse=descending)
        documents = [document for _, document in keyed] + missing
    return documents


def _cosine(a: list[float], b: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norm == 0:
        return 0.0
    return sum(x * y for x, y in zip(a, b, strict=False)) / norm


class InMemorySearchEngine(SearchEngine):
    """The `SearchEngine` interface over the module-level store."""

    @classmethod
    async def new_instance(cls) -> InMemorySearchEngine:
        return cls()

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def info(self) -> dict[str, Any]:
        return {"backend": ENGINE_NAME, "version": "test", "indexes": len(_INDEXES)}

    async def create_index(self, dataset: Any) -> None:
        _INDEXES.setdefault(dataset.id, {})

    async def delete_index(self, dataset: Any) -> None:
        for record_id in _INDEXES.pop(dataset.id, {}):
            _RECORD_DATASET.pop(record_id, None)

    async def configure_metadata_property(self, dataset: Any, metadata_property: Any) -> None:
        return None

    async def configure_index_vectors(self, vector_settings: Any) -> None:
        return None

    async def index_records(self, dataset: Any, records: Iterable[Any]) -> None:
        index = _INDEXES.setdefault(dataset.id, {})
        for record in records:
            index[record.id] = _record_document(dataset, record)
            _RECORD_DATASET[record.id] = dataset.id

    async def partial_record_update(self, record: Any, **update: Any) -> None:
        document = _document(record.id)
        if document is not None:
            document.update({key: _plain(value) for key, value in update.items()})

    async def delete_records(self, dataset: Any, records: Iterable[Any]) -> None:
        index = _INDEXES.get(dataset.id, {})
        for record in records:
            index.pop(record.id, None)
            _RECORD_DATASET.pop(record.id, None)

    async def update_record_response(self, response: Any) -> None:
        document = _document(response.record_id)
        if document is not None:
            document["responses"][response.id] = _response_document(response)

    async def delete_record_response(self, response: Any) -> None:
        document = _document(response.record_id)
        if document is not None:
            document["responses"].pop(response.id, None)

    async def update_record_suggestion(self, suggestion: Any) -> None:
        document = _document(suggestion.record_id)
        if document is not None:
            document["suggestions"][suggestion.question.name] = _suggestion_document(suggestion)

    async def delete_record_suggestion(self, suggestion: Any) -> None:
        document = _document(suggestion.record_id)
        if document is not None:
            document["suggestions"].pop(suggestion.question.name, None)

    async def get_dataset_progress(self, dataset: Any) -> dict[str, Any]:
        if dataset.is_draft:
            return {}
        statuses = Counter(d["status"] for d in _INDEXES.get(dataset.id, {}).values())
        return {"total": sum(statuses.values()), **statuses}

    async def get_dataset_user_progress(self, dataset: Any, user: Any) -> dict[str, Any]:
        if dataset.is_draft:
            return {}
        statuses = Counter(
            response["status"]
            for document in _INDEXES.get(dataset.id, {}).values()
            for response in document["responses"].values()
            if response["user_id"] == user.id
        )
        return {"total": sum(statuses.values()), **statuses}

    def _candidates(self, dataset: Any, query: Any, filter: Any) -> list[tuple[Document, float]]:
        found = []
        for document in _INDEXES.get(dataset.id, {}).values():
            if filter is not None and not _matches(document, filter):
                continue
            score = 1.0 if query is None else _text_score(document, dataset, query)
            if score is not None:
                found.append((document, score))
        return found

    async def search(
        self,
        dataset: Any,
        query: Any = None,
        filter: Any = None,
        sort: list[Any] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: Any = None,
    ) -> Any:
        found = self._candidates(dataset, query, filter)
        scores = {document["id"]: score for document, score in found}
        documents = [document for document, _ in found]
        # Elasticsearch's default: best text match first; then insertion order.
        if query is not None:
            documents.sort(key=lambda d: scores[d["id"]], reverse=True)
        if sort:
            documents = _sorted(documents, sort)
        page = documents[offset : offset + limit]
        return SearchResponses(
            items=[SearchResponseItem(record_id=d["id"], score=scores[d["id"]]) for d in page],
            total=len(documents),
        )

    async def similarity_search(
        self,
        dataset: Any,
        vector_settings: Any,
        value: list[float] | None = None,
        record: Any = None,
        query: Any = None,
        filter: Any = None,
        max_results: int = 100,
        order: Any = SimilarityOrder.most_similar,
        threshold: float | None = None,
    ) -> Any:
        if bool(value) == bool(record):
            raise ValueError("Must provide either vector value or record to compute the similarity")
        vector = value or record.vector_value_by_vector_settings(vector_settings)
        if not vector:
            raise ValueError("Cannot find a vector value to apply with provided info")
        if _plain(order) == _plain(SimilarityOrder.least_similar):
            vector = [-x for x in vector]
        excluded = record.id if record is not None else None
        scored = []
        for document, _ in self._candidates(dataset, query, filter):
            other = document["vectors"].get(vector_settings.id)
            if other is None or document["id"] == excluded:
                continue
            # Elasticsearch's cosine score, in [0, 1].
            score = (1.0 + _cosine(vector, other)) / 2.0
            if threshold is None or score >= threshold:
                scored.append((score, document["id"]))
        scored.sort(key=lambda item: item[0], reverse=True)
        scored = scored[:max_results]
        return SearchResponses(
            items=[SearchResponseItem(record_id=rid, score=score) for score, rid in scored],
            total=len(scored),
        )

    async def compute_metrics_for(self, metadata_property: Any) -> Any:
        name = metadata_property.name
        values = [
            v
            for document in _INDEXES.get(metadata_property.dataset_id, {}).values()
            for v in _as_list(document["metadata"].get(name))
        ]
        kind = _plain(metadata_property.type)
        if kind == _plain(MetadataPropertyType.terms):
            counts = Counter(str(v) for v in values)
            return TermsMetrics(
                total=sum(counts.values()),
                values=[
                    TermsMetrics.TermCount(term=term, count=count)
                    for term, count in counts.most_common()
                ],
            )
        numbers = [n for n in (_as_number(v) for v in values) if n is not None]
        if kind == _plain(MetadataPropertyType.integer):
            return IntegerMetadataMetrics(
                min=int(min(numbers)) if numbers else None,
                max=int(max(numbers)) if numbers else None,
            )
        return FloatMetadataMetrics(
            min=min(numbers) if numbers else None, max=max(numbers) if numbers else None
        )
