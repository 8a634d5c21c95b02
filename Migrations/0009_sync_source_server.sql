-- The server a change's source position belongs to. MySQL binlog positions are comparable only
-- within one server's binlog: after a failover or RESET MASTER the numbers start again at
-- mysql-bin.000001, and compared with the old server's they made every newer change look older
-- (skipped for good, the lag stuck at critical). pgtrack_sync_newer (SQL/070_sync.sql) compares
-- positions only within one server, else the source times.
-- MySQL: 'mysql:<server_id>', plus '/<GTID source uuid>' when the change has a GTID; NULL for
-- PostgreSQL (one LSN sequence) and for connectors without a position. Rows and states written
-- before this migration have NULL: a MySQL row's next change compares with it by time.
ALTER TABLE sync.accounts ADD COLUMN source_server text;
ALTER TABLE sync.customers ADD COLUMN source_server text;
ALTER TABLE sync.products ADD COLUMN source_server text;
ALTER TABLE sync.orders ADD COLUMN source_server text;
ALTER TABLE sync.users ADD COLUMN source_server text;
ALTER TABLE sync.sync_state ADD COLUMN last_source_server text;
