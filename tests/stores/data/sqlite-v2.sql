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
INSERT INTO "sagaflow_meta" VALUES('schema_version','2');
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
INSERT INTO "sagaflow_quarantine" VALUES('v2-quarantined','set aside by hand',1.79641755366043639184e+09);
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
        , path TEXT NOT NULL DEFAULT '[]', path_count INTEGER NOT NULL DEFAULT 0);
INSERT INTO "sagaflow_sagas" VALUES('v2-done','store-order','226c2e1e1442cff9','store_sagas:Order','COMPLETED','completed',4,3,'[]',1700000000.0,1700000004.0,1700000003.5,NULL,NULL,NULL,'[{"name":"reserve","status":"COMPLETED","attempts":1,"started_at":1700000001.0,"finished_at":1700000001.5},{"name":"charge","status":"COMPLETED","attempts":1,"started_at":1700000002.0,"finished_at":1700000002.5},{"name":"ship","status":"COMPLETED","attempts":1,"started_at":1700000003.0,"finished_at":1700000003.5}]','{"order_id":"00000000-0000-0000-0000-000000000001","amount":"0","placed":null,"day":null,"tier":"gold","level":1,"address":{"street":"Main St 1","zip":null},"items":[],"tags":[],"pair":[0,""],"counts":{},"note":"done","extra":{},"anything":null,"blob":"","delay":[0,0,0],"charged_id":null}',NULL,NULL,NULL,'[["SagaStarted",1700000000.0,null,0],["StepStarted",1700000001.0,"reserve",1],["StepCompleted",1700000001.5,"reserve",1],["StepStarted",1700000002.0,"charge",1],["StepCompleted",1700000002.5,"charge",1],["StepStarted",1700000003.0,"ship",1],["StepCompleted",1700000003.5,"ship",1],["SagaCompleted",1700000003.5,null,0]]',8,'[{"$type":"tuple","items":["did",0]},{"$type":"tuple","items":["did",1]},{"$type":"tuple","items":["did",2]}]',3,'[["not_started","start","reserve"],["reserve","advance","charge"],["charge","advance","ship"],["ship","advance","completed"]]',4);
INSERT INTO "sagaflow_sagas" VALUES('v2-running','store-order','226c2e1e1442cff9','store_sagas:Order','RUNNING','charge',2,1,'[]',1700000000.0,1700000002.0,NULL,NULL,NULL,NULL,'[{"name":"reserve","status":"COMPLETED","attempts":1,"started_at":1700000001.0,"finished_at":1700000001.5},{"name":"charge","status":"RUNNING","attempts":1,"started_at":1700000002.0},{"name":"ship"}]','{"order_id":"00000000-0000-0000-0000-000000000001","amount":"0","placed":null,"day":null,"tier":"gold","level":1,"address":{"street":"Main St 1","zip":null},"items":[],"tags":[],"pair":[0,""],"counts":{},"note":"running","extra":{},"anything":null,"blob":"","delay":[0,0,0],"charged_id":null}',NULL,NULL,NULL,'[["SagaStarted",1700000000.0,null,0],["StepStarted",1700000001.0,"reserve",1],["StepCompleted",1700000001.5,"reserve",1],["StepStarted",1700000002.0,"charge",1]]',4,'[{"$type":"tuple","items":["did",0]}]',1,'[["not_started","start","reserve"],["reserve","advance","charge"]]',2);
INSERT INTO "sagaflow_sagas" VALUES('v2-quarantined','store-order','226c2e1e1442cff9','store_sagas:Order','RUNNING','reserve',1,0,'[]',1700000000.0,1700000001.0,NULL,NULL,NULL,NULL,'[{"name":"reserve","status":"RUNNING","attempts":1,"started_at":1700000001.0},{"name":"charge"},{"name":"ship"}]','{"order_id":"00000000-0000-0000-0000-000000000001","amount":"0","placed":null,"day":null,"tier":"gold","level":1,"address":{"street":"Main St 1","zip":null},"items":[],"tags":[],"pair":[0,""],"counts":{},"note":"set aside","extra":{},"anything":null,"blob":"","delay":[0,0,0],"charged_id":null}',NULL,NULL,NULL,'[["SagaStarted",1700000000.0,null,0],["StepStarted",1700000001.0,"reserve",1]]',2,'[]',0,'[["not_started","start","reserve"]]',1);
CREATE INDEX sagaflow_sagas_by_status ON sagaflow_sagas (status, saga_name);
COMMIT;
