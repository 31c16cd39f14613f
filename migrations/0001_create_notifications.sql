-- Per-user notifications (SPEC 2.2). Portable SQL: runs on MySQL 8 and MariaDB 10.11.
--
-- dedup_key   SHA-256 of (user_id, type, reference_type, reference_id); the UNIQUE index on it
--             is the dedup check (no query-then-insert). utf8mb4_bin keeps every comparison
--             exact (no case or accent folding).
-- source_record  topic:partition:offset of the Kafka record that created the row, so a replay
--             of that same record is recognised and published again.
-- write_batch random id of the ingest write that inserted the row: a writer tells the rows it
--             inserted from rows that already existed without relying on auto-increment order.
CREATE TABLE notifications (
    id             BIGINT       NOT NULL AUTO_INCREMENT,
    user_id        VARCHAR(64)  NOT NULL,
    type           VARCHAR(50)  NOT NULL,
    title          VARCHAR(255) NOT NULL,
    message        TEXT         NOT NULL,
    link           VARCHAR(500) NULL,
    status         VARCHAR(20)  NOT NULL DEFAULT 'UNREAD',
    reference_id   VARCHAR(100) NULL,
    reference_type VARCHAR(50)  NULL,
    created_at     DATETIME(3)  NOT NULL,
    read_at        DATETIME(3)  NULL,
    dedup_key      BINARY(32)   NOT NULL,
    source_record  VARCHAR(320) NULL,
    write_batch    BIGINT       NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_notifications_dedup (dedup_key),
    KEY idx_notifications_user_created (user_id, created_at, id),
    KEY idx_notifications_user_status (user_id, status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
