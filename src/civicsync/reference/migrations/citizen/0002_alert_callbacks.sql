-- F10 (ML alerts by API callback): broadcast alerts may target a district; every alert written by the
-- API records which API client sent it and the client's own alert id, unique per client, so a resend
-- is recognised instead of duplicated.
ALTER TABLE citizen_alerts
    ADD COLUMN district         text,
    ADD COLUMN source           text,
    ADD COLUMN source_alert_id  text;
CREATE UNIQUE INDEX citizen_alerts_source_alert ON citizen_alerts (source, source_alert_id);
