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
INSERT INTO "sagaflow_history" VALUES('v1-running',0,'SagaStarted',1700000000.0,NULL,0,NULL,NULL);
INSERT INTO "sagaflow_history" VALUES('v1-running',1,'StepRetrying',1700000000.0,'charge',0,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',2,'StepRetrying',1700000001.0,'charge',1,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',3,'StepRetrying',1700000002.0,'charge',2,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',4,'StepRetrying',1700000003.0,'charge',3,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',5,'StepRetrying',1700000004.0,'charge',4,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',6,'StepRetrying',1700000005.0,'charge',5,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',7,'StepRetrying',1700000006.0,'charge',6,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',8,'StepRetrying',1700000007.0,'charge',7,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',9,'StepRetrying',1700000008.0,'charge',8,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',10,'StepRetrying',1700000009.0,'charge',9,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',11,'StepRetrying',1700000010.0,'charge',10,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',12,'StepRetrying',1700000011.0,'charge',11,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',13,'StepRetrying',1700000012.0,'charge',12,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',14,'StepRetrying',1700000013.0,'charge',13,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',15,'StepRetrying',1700000014.0,'charge',14,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',16,'StepRetrying',1700000015.0,'charge',15,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',17,'StepRetrying',1700000016.0,'charge',16,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',18,'StepRetrying',1700000017.0,'charge',17,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',19,'StepRetrying',1700000018.0,'charge',18,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',20,'StepRetrying',1700000019.0,'charge',19,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',21,'StepRetrying',1700000020.0,'charge',20,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',22,'StepRetrying',1700000021.0,'charge',21,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',23,'StepRetrying',1700000022.0,'charge',22,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',24,'StepRetrying',1700000023.0,'charge',23,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',25,'StepRetrying',1700000024.0,'charge',24,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',26,'StepRetrying',1700000025.0,'charge',25,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',27,'StepRetrying',1700000026.0,'charge',26,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',28,'StepRetrying',1700000027.0,'charge',27,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',29,'StepRetrying',1700000028.0,'charge',28,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',30,'StepRetrying',1700000029.0,'charge',29,'busy','{"delay":1.0}');
INSERT INTO "sagaflow_history" VALUES('v1-running',31,'StepRetrying',1700000030.0,'charge',30,'busy','{"delay":1.0}');
CREATE TABLE sagaflow_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
INSERT INTO "sagaflow_meta" VALUES('schema_version','1');
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
    );
INSERT INTO "sagaflow_sagas" VALUES('v1-done','store-order','226c2e1e1442cff9','store_sagas:Order','COMPLETED','completed',6,3,'[]',1700000000.0,1700000000.5,1700000000.5,NULL,NULL,NULL,'[{"name":"reserve","status":"COMPLETED","attempts":1,"started_at":1700000000.0,"finished_at":1700000000.0},{"name":"charge","status":"COMPLETED","attempts":2,"started_at":1700000000.0,"finished_at":1700000000.5},{"name":"ship","status":"COMPLETED","attempts":1,"started_at":1700000000.5,"finished_at":1700000000.5}]','{"order_id":"00000000-0000-0000-0000-000000000001","amount":"0","placed":"2024-05-01T12:00:00+00:00","day":null,"tier":"gold","level":1,"address":{"street":"Main St 1","zip":null},"items":[],"tags":[],"pair":[0,""],"counts":{},"note":"flaky","extra":{},"anything":null,"blob":"","delay":[0,0,0],"charged_id":"v1-done:charge:forward"}',NULL,NULL,NULL,'[["SagaStarted",1700000000.0,null,0],["StepStarted",1700000000.0,"reserve",1],["StepCompleted",1700000000.0,"reserve",1],["StepStarted",1700000000.0,"charge",1],["StepRetrying",1700000000.0,"charge",1,"ConnectionError: gateway busy",{"delay":0.5}],["StepStarted",1700000000.5,"charge",2],["StepCompleted",1700000000.5,"charge",2],["StepStarted",1700000000.5,"ship",1],["StepCompleted",1700000000.5,"ship",1],["SagaCompleted",1700000000.5,null,0]]',10,'[{"$type":"tuple","items":["Reserved","00000000-0000-0000-0000-000000000001"]},{"$type":"store_sagas:Charged","value":{"order_id":"00000000-0000-0000-0000-000000000001","amount":"0"}}]',2);
INSERT INTO "sagaflow_sagas" VALUES('v1-compensated','store-order','226c2e1e1442cff9','store_sagas:Order','COMPENSATED','compensated',8,1,'[0]',1700000000.5,1700000002.0,1700000002.0,NULL,NULL,NULL,'[{"name":"reserve","status":"COMPLETED","attempts":1,"started_at":1700000000.5,"finished_at":1700000000.5,"compensation":"COMPENSATED","compensation_attempts":1,"compensation_started_at":1700000002.0,"compensation_finished_at":1700000002.0},{"name":"charge","status":"FAILED","attempts":3,"started_at":1700000000.5,"finished_at":1700000002.0,"error":"ValueError: card declined"},{"name":"ship"}]','{"order_id":"00000000-0000-0000-0000-000000000001","amount":"0","placed":null,"day":null,"tier":"gold","level":1,"address":{"street":"Main St 1","zip":null},"items":[],"tags":[],"pair":[0,""],"counts":{},"note":"decline","extra":{},"anything":null,"blob":"","delay":[0,0,0],"charged_id":null}','{"type":"StepError","message":"step 2 ''charge'' failed: ValueError: card declined","step_index":1,"step":"charge","cause":"ValueError: card declined"}',NULL,NULL,'[["SagaStarted",1700000000.5,null,0],["StepStarted",1700000000.5,"reserve",1],["StepCompleted",1700000000.5,"reserve",1],["StepStarted",1700000000.5,"charge",1],["StepRetrying",1700000000.5,"charge",1,"ValueError: card declined",{"delay":0.5}],["StepStarted",1700000001.0,"charge",2],["StepRetrying",1700000001.0,"charge",2,"ValueError: card declined",{"delay":1.0}],["StepStarted",1700000002.0,"charge",3],["StepFailed",1700000002.0,"charge",3,"ValueError: card declined"],["CompensationStarted",1700000002.0,"reserve",1],["CompensationCompleted",1700000002.0,"reserve",1],["SagaCompensated",1700000002.0,null,0,"step 2 ''charge'' failed: ValueError: card declined"]]',12,'[{"$type":"tuple","items":["Reserved","00000000-0000-0000-0000-000000000001"]},{"released":"00000000-0000-0000-0000-000000000001"}]',2);
INSERT INTO "sagaflow_sagas" VALUES('v1-running','store-order','226c2e1e1442cff9','store_sagas:Order','RUNNING','reserve',40,0,'[]',1700000000.0,1700000039.0,NULL,NULL,NULL,NULL,'[{"name":"reserve"},{"name":"charge"},{"name":"ship"}]','{"order_id":"00000000-0000-0000-0000-000000000001","amount":"0","placed":null,"day":null,"tier":"gold","level":1,"address":{"street":"Main St 1","zip":null},"items":[],"tags":[],"pair":[0,""],"counts":{},"note":null,"extra":{},"anything":null,"blob":"","delay":[0,0,0],"charged_id":null}',NULL,NULL,NULL,'[["StepRetrying",1700000031.0,"charge",31,"busy",{"delay":1.0}],["StepRetrying",1700000032.0,"charge",32,"busy",{"delay":1.0}],["StepRetrying",1700000033.0,"charge",33,"busy",{"delay":1.0}],["StepRetrying",1700000034.0,"charge",34,"busy",{"delay":1.0}],["StepRetrying",1700000035.0,"charge",35,"busy",{"delay":1.0}],["StepRetrying",1700000036.0,"charge",36,"busy",{"delay":1.0}],["StepRetrying",1700000037.0,"charge",37,"busy",{"delay":1.0}],["StepRetrying",1700000038.0,"charge",38,"busy",{"delay":1.0}],["StepRetrying",1700000039.0,"charge",39,"busy",{"delay":1.0}]]',41,'[]',0);
CREATE INDEX sagaflow_sagas_by_status ON sagaflow_sagas (status, saga_name);
COMMIT;
