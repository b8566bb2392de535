-- MPG tables for postgresql.
-- GENERATED from mpg/storage/tables.py by mpg.storage.ddl; do not edit by hand.
-- Regenerate with: python -m mpg.storage.ddl --write
-- Outbox, OutboxAttachment, Inbox, InboxAttachment are the integration contract;
-- MpgTransition is the gateway's own history table.

CREATE TABLE "Outbox" (
	"TxMessageId" VARCHAR(50) NOT NULL,
	"AppCode" VARCHAR(20),
	"SourceDomain" VARCHAR(50),
	"AgentSender" VARCHAR(100),
	"Sender" VARCHAR(100),
	"ReceiverType" CHAR(1),
	"ReceiverList" TEXT,
	"BccList" TEXT,
	"Subject" VARCHAR(200),
	"Content" TEXT,
	"ContentType" VARCHAR(20),
	"AttachmentList" TEXT,
	"AlertFlag" BOOLEAN,
	"MessageId" VARCHAR(50),
	"State" INTEGER,
	"TransmitTime" NCHAR(20),
	"StatusTime" NCHAR(20),
	"StatusLog" VARCHAR(200),
	"Priority" VARCHAR(1),
	"Keywords" VARCHAR(200),
	PRIMARY KEY ("TxMessageId")
);

CREATE INDEX "IX_Outbox_State" ON "Outbox" ("State");

CREATE TABLE "OutboxAttachment" (
	"AttachmentId" UUID NOT NULL,
	"MessageId" VARCHAR(50),
	"SeqNo" INTEGER,
	"FileName" VARCHAR(250),
	"FileType" VARCHAR(10),
	"FileSize" INTEGER,
	"FileData" BYTEA,
	"SourceUri" VARCHAR(2048),
	"DownloadFlag" INTEGER,
	PRIMARY KEY ("AttachmentId")
);

CREATE INDEX "IX_OutboxAttachment_MessageId" ON "OutboxAttachment" ("MessageId");

CREATE TABLE "Inbox" (
	"RxMessageId" VARCHAR(50) NOT NULL,
	"AppCode" VARCHAR(20),
	"SourceDomain" VARCHAR(50),
	"AgentSender" VARCHAR(100),
	"Sender" VARCHAR(100),
	"Owner" TEXT,
	"ReceiverType" CHAR(1),
	"ReceiverList" TEXT,
	"BccList" TEXT,
	"Subject" VARCHAR(200),
	"Content" TEXT,
	"ContentType" VARCHAR(20),
	"AttachmentFlag" BOOLEAN,
	"AlertFlag" BOOLEAN,
	"MessageId" VARCHAR(50),
	"State" INTEGER,
	"TransmitTime" NCHAR(20),
	"ReceiveTime" NCHAR(20),
	"StatusTime" NCHAR(20),
	"StatusLog" VARCHAR(200),
	"Priority" VARCHAR(1),
	"Keywords" VARCHAR(200),
	PRIMARY KEY ("RxMessageId")
);

CREATE INDEX "IX_Inbox_State" ON "Inbox" ("State");

CREATE TABLE "InboxAttachment" (
	"AttachmentId" UUID NOT NULL,
	"MessageId" VARCHAR(50),
	"SeqNo" INTEGER,
	"FileName" VARCHAR(250),
	"FileType" VARCHAR(10),
	"FileSize" INTEGER,
	"FileData" BYTEA,
	"SourceUri" VARCHAR(2048),
	"DownloadFlag" INTEGER,
	PRIMARY KEY ("AttachmentId")
);

CREATE INDEX "IX_InboxAttachment_MessageId" ON "InboxAttachment" ("MessageId");

CREATE TABLE "MpgTransition" (
	"Id" SERIAL NOT NULL,
	"Box" VARCHAR(3) NOT NULL,
	"MessageKey" VARCHAR(50) NOT NULL,
	"FromState" INTEGER,
	"ToState" INTEGER NOT NULL,
	"At" VARCHAR(26) NOT NULL,
	"Reason" VARCHAR(200) NOT NULL,
	"Gateway" VARCHAR(100) NOT NULL,
	PRIMARY KEY ("Id")
);

CREATE INDEX "IX_MpgTransition_MessageKey" ON "MpgTransition" ("MessageKey");

CREATE TABLE "MpgDropFile" (
	"TxMessageId" VARCHAR(50) NOT NULL,
	"FileName" VARCHAR(255) NOT NULL,
	"Sha256" CHAR(64) NOT NULL,
	"At" VARCHAR(26) NOT NULL,
	PRIMARY KEY ("TxMessageId")
);

CREATE TABLE "MpgExport" (
	"Name" VARCHAR(50) NOT NULL,
	"LastId" INTEGER NOT NULL,
	"At" VARCHAR(26) NOT NULL,
	PRIMARY KEY ("Name")
);
