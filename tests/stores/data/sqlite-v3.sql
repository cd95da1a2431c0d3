BEGIN TRANSACTION;
CREATE TABLE sagaflow_events (
            saga_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (saga_id, seq)
        ) WITHOUT ROWID;
CREATE TABLE sagaflow_history (
            saga_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            at REAL NOT NULL,
            step TEXT,
            attempt INTEGER NOT NULL,
            error TEXT,
            detail TEXT,
            PRIMARY KEY (saga_id, seq)
        ) WITHOUT ROWID;
CREATE TABLE sagaflow_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
INSERT INTO "sagaflow_meta" VALUES('schema_version','3');
CREATE TABLE sagaflow_path (
            saga_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            source TEXT NOT NULL,
            trigger TEXT NOT NULL,
            destination TEXT NOT NULL,
            PRIMARY KEY (saga_id, seq)
        ) WITHOUT ROWID;
CREATE TABLE sagaflow_quarantine (
            saga_id TEXT PRIMARY KEY NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL
        );
CREATE TABLE sagaflow_sagas (
            saga_id TEXT PRIMARY KEY NOT NULL,
            saga_name TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            data_type TEXT NOT NULL,
            status TEXT NOT NULL,
            state TEXT NOT NULL,
            version INTEGER NOT NULL,
            cursor INTEGER NOT NULL,
            undo TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finished_at REAL,
            wake_at REAL,
            deadline_at REAL,
            compensation_deadline_at REAL,
            steps TEXT NOT NULL,
            data TEXT NOT NULL,
            error TEXT,
            failures TEXT,
            resolution TEXT,
            history TEXT NOT NULL,
            history_count INTEGER NOT NULL,
            events TEXT NOT NULL,
            events_count INTEGER NOT NULL
        , path TEXT NOT NULL DEFAULT '[]', path_count INTEGER NOT NULL DEFAULT 0, waiting TEXT, waiting_after BIGINT NOT NULL DEFAULT 0, signal_marks TEXT NOT NULL DEFAULT '{}', business_key TEXT);
INSERT INTO "sagaflow_sagas" VALUES('v3-signalled','store-other','342b0defccb2f164','store_sagas:Other','RUNNING','look',2,0,'[]',1700000000.0,1700000000.0,NULL,NULL,NULL,NULL,'[{"name":"look"}]','{"n":0}',NULL,NULL,NULL,'[["SagaStarted",1700000000.0,null,0]]',1,'[]',0,'[["not_started","start","look"]]',1,'approval',0,'{}',NULL);
INSERT INTO "sagaflow_sagas" VALUES('v3-timer','store-other','342b0defccb2f164','store_sagas:Other','RUNNING','look',2,0,'[]',1700000000.0,1700000000.0,NULL,1700000100.0,NULL,NULL,'[{"name":"look"}]','{"n":0}',NULL,NULL,NULL,'[["SagaStarted",1700000000.0,null,0]]',1,'[]',0,'[["not_started","start","look"]]',1,'approval',0,'{}',NULL);
INSERT INTO "sagaflow_sagas" VALUES('v3-parked','store-other','342b0defccb2f164','store_sagas:Other','RUNNING','look',2,0,'[]',1700000000.0,1700000000.0,NULL,NULL,NULL,NULL,'[{"name":"look"}]','{"n":0}',NULL,NULL,NULL,'[["SagaStarted",1700000000.0,null,0]]',1,'[]',0,'[["not_started","start","look"]]',1,'approval',0,'{}',NULL);
INSERT INTO "sagaflow_sagas" VALUES('v3-running','store-other','342b0defccb2f164','store_sagas:Other','RUNNING','look',1,0,'[]',1700000000.0,1700000000.0,NULL,NULL,NULL,NULL,'[{"name":"look"}]','{"n":0}',NULL,NULL,NULL,'[["SagaStarted",1700000000.0,null,0]]',1,'[]',0,'[["not_started","start","look"]]',1,NULL,0,'{}',NULL);
INSERT INTO "sagaflow_sagas" VALUES('v3-done','store-other','342b0defccb2f164','store_sagas:Other','COMPLETED','look',2,0,'[]',1700000000.0,1700000000.0,1700000003.0,NULL,NULL,NULL,'[{"name":"look"}]','{"n":0}',NULL,NULL,NULL,'[["SagaStarted",1700000000.0,null,0]]',1,'[]',0,'[["not_started","start","look"]]',1,NULL,0,'{}',NULL);
CREATE TABLE sagaflow_signals (
            saga_id TEXT NOT NULL,
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            signal_id TEXT NOT NULL,
            payload TEXT NOT NULL,
            at REAL NOT NULL,
            UNIQUE (saga_id, signal_id)
        );
INSERT INTO "sagaflow_signals" VALUES('v3-signalled',1,'approval','a1','{}',1700000001.0);
INSERT INTO "sagaflow_signals" VALUES('v3-timer',2,'other','o1','{}',1700000001.0);
INSERT INTO "sagaflow_signals" VALUES('v3-running',3,'approval','a2','{}',1700000002.0);
CREATE INDEX sagaflow_sagas_by_status ON sagaflow_sagas (status, saga_name);
CREATE INDEX sagaflow_sagas_parked ON sagaflow_sagas (wake_at) WHERE waiting IS NOT NULL;
CREATE INDEX sagaflow_sagas_by_key ON sagaflow_sagas (business_key, saga_name) WHERE business_key IS NOT NULL;
CREATE INDEX sagaflow_signals_by_name ON sagaflow_signals (saga_id, name, seq);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('sagaflow_signals',3);
COMMIT;
