-- Indexes for the inbox API (SPEC 4) and recovery after reconnect.
--
-- idx_notifications_user_status_created  unread pages newest first, the unread count and
--             read-all: an index range of one user's unread rows, already in list order.
--             It supersedes (user_id, status), which is dropped.
-- idx_notifications_user_id  a user's rows after an id, in id order (recovery by last-id).
ALTER TABLE notifications
    ADD KEY idx_notifications_user_status_created (user_id, status, created_at, id),
    ADD KEY idx_notifications_user_id (user_id, id),
    DROP KEY idx_notifications_user_status;
