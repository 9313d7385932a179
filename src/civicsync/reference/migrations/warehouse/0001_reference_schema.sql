-- smart_warehouse reference schema (SPEC §1). Applied once, recorded in civicsync.schema_migrations.
CREATE SCHEMA IF NOT EXISTS analytics;

CREATE TABLE schemes (
    scheme_id          bigint PRIMARY KEY,
    code               text NOT NULL UNIQUE,
    name               text NOT NULL,
    description        text,
    department         text NOT NULL,
    category           text NOT NULL,
    benefit_type       text NOT NULL,
    benefit_amount     numeric(12,2),
    eligibility_rules  jsonb NOT NULL DEFAULT '{}',
    status             text NOT NULL CHECK (status IN ('DRAFT','ACTIVE','SUSPENDED','CLOSED')),
    start_date         date,
    end_date           date,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE citizen_profiles (
    citizen_id         uuid PRIMARY KEY,
    national_id        text NOT NULL UNIQUE,
    full_name          text NOT NULL,
    date_of_birth      date,
    gender             text,
    phone              text,
    email              text,
    address_line       text,
    district           text,
    state              text,
    pincode            text,
    annual_income      numeric(14,2),
    household_size     integer,
    social_category    text,
    occupation         text,
    disability_status  boolean NOT NULL DEFAULT false,
    verified_at        timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX citizen_profiles_updated_at ON citizen_profiles (updated_at);

CREATE TABLE eligibility_predictions (
    prediction_id      bigint PRIMARY KEY,
    citizen_id         uuid NOT NULL REFERENCES citizen_profiles (citizen_id),
    scheme_id          bigint NOT NULL REFERENCES schemes (scheme_id),
    score              numeric(5,4) NOT NULL CHECK (score >= 0 AND score <= 1),
    status             text NOT NULL CHECK (status IN ('ELIGIBLE','LIKELY','INELIGIBLE','EXPIRED')),
    model_version      text NOT NULL,
    reasons            jsonb NOT NULL DEFAULT '[]',
    predicted_at       timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX eligibility_predictions_citizen ON eligibility_predictions (citizen_id);

CREATE TABLE application_decisions (
    decision_id        bigint PRIMARY KEY,
    application_id     bigint NOT NULL,
    citizen_id         uuid NOT NULL,
    scheme_id          bigint NOT NULL,
    decision_code      text NOT NULL CHECK (decision_code IN ('RCVD','UNDER_REVIEW','PEND_DOC','APPR','REJ','DISB')),
    reason             text,
    amount_sanctioned  numeric(12,2),
    officer_id         text NOT NULL,
    decided_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX application_decisions_application ON application_decisions (application_id);

CREATE TABLE profile_summaries (
    citizen_id               uuid PRIMARY KEY,
    schemes_enrolled         integer NOT NULL DEFAULT 0,
    total_benefits_received  numeric(14,2) NOT NULL DEFAULT 0,
    active_applications      integer NOT NULL DEFAULT 0,
    last_benefit_date        date,
    computed_at              timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- Fed from the portal (F6, F7, F5); civicsync writes them.
CREATE TABLE applications (
    application_id     bigint PRIMARY KEY,
    citizen_ref        text NOT NULL,
    scheme_id          bigint NOT NULL,
    status             text NOT NULL,
    submitted_at       timestamptz,
    form_data          jsonb NOT NULL DEFAULT '{}',
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE application_events (
    event_id           bigserial PRIMARY KEY,
    application_id     bigint NOT NULL,
    event_type         text NOT NULL,
    occurred_at        timestamptz NOT NULL,
    source_lsn         pg_lsn,
    UNIQUE (application_id, event_type, occurred_at)
);

CREATE TABLE application_documents (
    document_id          bigint PRIMARY KEY,
    application_id       bigint NOT NULL,
    doc_type             text NOT NULL,
    mime_type            text,
    size_bytes           bigint,
    sha256               text,
    uploaded_at          timestamptz,
    verification_status  text NOT NULL DEFAULT 'PENDING'
);

CREATE TABLE profile_change_requests (
    id                 bigserial PRIMARY KEY,
    citizen_id         uuid NOT NULL,
    field              text NOT NULL,
    old_value          text,
    new_value          text,
    requested_at       timestamptz NOT NULL,
    status             text NOT NULL DEFAULT 'PENDING'
);

CREATE TABLE analytics.user_behavior_daily (
    day              date NOT NULL,
    district         text NOT NULL,
    event_type       text NOT NULL,
    events           bigint NOT NULL,
    unique_citizens  bigint NOT NULL,
    sessions         bigint NOT NULL,
    avg_duration_ms  numeric(12,2),
    PRIMARY KEY (day, district, event_type)
);

CREATE TABLE analytics.feedback (
    feedback_id   bigint PRIMARY KEY,
    citizen_ref   text NOT NULL,
    scheme_id     bigint,
    rating        smallint NOT NULL,
    category      text,
    comment       text,
    created_at    timestamptz NOT NULL
);
