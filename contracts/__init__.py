"""msgspec Structs shared by the API, the pipeline and clients. No I/O here."""

from contracts.base import EventValue, FieldValue
from contracts.dataset import Citation, CitationMetadata, Dataset, DatasetRow, DatasetStats, ExtractionStats
from contracts.documents import CandidateRow, Document, ExtractedRow, ExtractionReply, Provenance
from contracts.events import Event, EventStatus, decode_event, encode_event
from contracts.fields import FIELD_TYPES, FieldDefinition, FieldType, PreparedSchema
from contracts.jobs import STAGES, TERMINAL_STATUSES, JobRecord, JobStatus, Stage, TaskAccepted, TaskStatus
from contracts.requests import ExtractorName, GenerateRequest

__all__ = [
    "FIELD_TYPES",
    "STAGES",
    "TERMINAL_STATUSES",
    "CandidateRow",
    "Citation",
    "CitationMetadata",
    "Dataset",
    "DatasetRow",
    "DatasetStats",
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
    "GenerateRequest",
    "JobRecord",
    "JobStatus",
    "PreparedSchema",
    "Provenance",
    "Stage",
    "TaskAccepted",
    "TaskStatus",
    "decode_event",
    "encode_event",
]
