"""msgspec Structs shared by the API, the pipeline and clients. No I/O here."""

from contracts.base import EventValue, FieldValue
from contracts.dataset import (
    GENERATED_SOURCE,
    Citation,
    CitationMetadata,
    Conflict,
    ConflictValue,
    Dataset,
    DatasetRow,
    DatasetStats,
    ExtractionStats,
    TextPart,
)
from contracts.documents import CandidateRow, Document, ExtractedRow, ExtractionReply, Provenance, Section
from contracts.events import Event, EventStatus, decode_event, encode_event
from contracts.fields import FIELD_TYPES, FieldDefinition, FieldType, PreparedSchema
from contracts.jobs import STAGE_ORDER, STAGES, TERMINAL_STATUSES, JobRecord, JobStatus, Stage, TaskAccepted, TaskStatus
from contracts.requests import ExtractorName, GenerateRequest, ReprocessRequest, ReprocessStage
from contracts.screening import Confidence, Criterion, Decision, Flow, Paper, PaperVerdict

__all__ = [
    "FIELD_TYPES",
    "GENERATED_SOURCE",
    "STAGES",
    "STAGE_ORDER",
    "TERMINAL_STATUSES",
    "CandidateRow",
    "Citation",
    "CitationMetadata",
    "Confidence",
    "Conflict",
    "ConflictValue",
    "Criterion",
    "Dataset",
    "DatasetRow",
    "DatasetStats",
    "Decision",
    "Document",
    "Event",
    "EventStatus",
    "EventValue",
    "ExtractedRow",
    "ExtractionReply",
    "ExtractionStats",
    "ExtractorName",
    "FieldDefinition",
    "FieldType",
    "FieldValue",
    "Flow",
    "GenerateRequest",
    "JobRecord",
    "JobStatus",
    "Paper",
    "PaperVerdict",
    "PreparedSchema",
    "Provenance",
    "ReprocessRequest",
    "ReprocessStage",
    "Section",
    "Stage",
    "TaskAccepted",
    "TaskStatus",
    "TextPart",
    "decode_event",
    "encode_event",
]
