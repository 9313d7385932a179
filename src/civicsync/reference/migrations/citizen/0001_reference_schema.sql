-- smart_citizen reference schema (SPEC §1). Applied once, recorded in civicsync.schema_migrations.
CREATE TABLE citizens (
    citizen_id          uuid PRIMARY KEY,
    national_id_masked  text,
    full_name           text NOT NULL,
    date_of_birth       date,
    gender              text,
    phone               text,
    email               text,
    address_line        text,
    district            text,
    state               text,
    pincode             text,
    preferred_language  text NOT NULL DEFAULT 'en',
    profile_source      text NOT NULL DEFAULT 'portal',
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE schemes (
    scheme_id        bigint PRIMARY KEY,
    code             text NOT NULL UNIQUE,
    name             text NOT NULL,
    description      text,
    category         text NOT NULL,
    benefit_summary  text,
    status           text NOT NULL CHECK (status IN ('OPEN','CLOSED')),
    synced_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE eligibility_hints (
    citizen_id   uuid NOT NULL REFERENCES citizens (citizen_id),
    scheme_id    bigint NOT NULL REFERENCES schemes (scheme_id),
    rank         smallint NOT NULL CHECK (rank BETWEEN 1 AND 5),
    score_band   text NOT NULL CHECK (score_band IN ('HIGH','MEDIUM')),
    reasons      jsonb NOT NULL DEFAULT '[]',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (citizen_id, scheme_id)
);

CREATE TABLE applications (
    application_id  bigint PRIMARY KEY,
    citizen_id      uuid NOT NULL REFERENCES citizens (citizen_id),
    scheme_id       bigint NOT NULL REFERENCES schemes (scheme_id),
    status          text NOT NULL CHECK (status IN ('DRAFT','SUBMITTED','UNDER_REVIEW','DOCUMENTS_REQUIRED',
                                                   'APPROVED','REJECTED','DISBURSED','WITHDRAWN')),
    form_data       jsonb NOT NULL DEFAULT '{}',
    decision_note   text,
    submitted_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE application_documents (
    document_id     bigint PRIMARY KEY,
    application_id  bigint NOT NULL REFERENCES applications (application_id),
    doc_type        text NOT NULL,
    file_name       text NOT NULL,
    mime_type       text,
    size_bytes      bigint,
    storage_uri     text NOT NULL,
    sha256          text,
    uploaded_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE profile_summary (
    citizen_id           uuid PRIMARY KEY REFERENCES citizens (citizen_id),
    schemes_enrolled     integer NOT NULL DEFAULT 0,
    benefits_band        text,
    active_applications  integer NOT NULL DEFAULT 0,
    last_benefit_date    date,
    synced_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE scheme_forecasts (
    scheme_id                 bigint NOT NULL,
    district                  text NOT NULL,
    horizon_date              date NOT NULL,
    expected_processing_days  numeric(8,2),
    demand_index              numeric(8,4),
    model_version             text NOT NULL,
    received_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scheme_id, district, horizon_date)
);

CREATE TABLE citizen_alerts (
    alert_id     bigserial PRIMARY KEY,
    citizen_id   uuid,
    scheme_id    bigint,
    severity     text NOT NULL,
    alert_type   text NOT NULL,
    message      text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz
);

CREATE TABLE user_events (
    event_id     bigint PRIMARY KEY,
    citizen_id   uuid,
    session_id   text NOT NULL,
    event_type   text NOT NULL,
    page         text,
    occurred_at  timestamptz NOT NULL,
    duration_ms  integer,
    device       text
);
CREATE INDEX user_events_occurred_at ON user_events (occurred_at);

CREATE TABLE feedback (
    feedback_id  bigint PRIMARY KEY,
    citizen_id   uuid NOT NULL,
    scheme_id    bigint,
    rating       smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    category     text,
    comment      text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_created_at ON feedback (created_at);
