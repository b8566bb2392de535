-- MPG tables for mariadb.
-- GENERATED from mpg/storage/tables.py by mpg.storage.ddl; do not edit by hand.
-- Regenerate with: python -m mpg.storage.ddl --write
-- Outbox, OutboxAttachment, Inbox, InboxAttachment are the integration contract;
-- MpgTransition is the gateway's own history table.

CREATE TABLE `Outbox` (
	`TxMessageId` VARCHAR(50) NOT NULL,
	`AppCode` VARCHAR(20),
	`SourceDomain` VARCHAR(50),
	`AgentSender` VARCHAR(100),
	`Sender` VARCHAR(100),
	`ReceiverType` CHAR(1),
	`ReceiverList` LONGTEXT,
	`BccList` LONGTEXT,
	`Subject` VARCHAR(200),
	`Content` LONGTEXT,
	`ContentType` VARCHAR(20),
	`AttachmentList` LONGTEXT,
	`AlertFlag` BOOL,
	`MessageId` VARCHAR(50),
	`State` INTEGER,
	`TransmitTime` CHAR(20),
	`StatusTime` CHAR(20),
	`StatusLog` VARCHAR(200),
	`Priority` VARCHAR(1),
	`Keywords` VARCHAR(200),
	PRIMARY KEY (`TxMessageId`)
)CHARSET=utf8mb4;

CREATE INDEX `IX_Outbox_State` ON `Outbox` (`State`);

CREATE TABLE `OutboxAttachment` (
	`AttachmentId` UUID NOT NULL,
	`MessageId` VARCHAR(50),
	`SeqNo` INTEGER,
	`FileName` VARCHAR(250),
	`FileType` VARCHAR(10),
	`FileSize` INTEGER,
	`FileData` LONGBLOB,
	`SourceUri` VARCHAR(2048),
	`DownloadFlag` INTEGER,
	PRIMARY KEY (`AttachmentId`)
)CHARSET=utf8mb4;

CREATE INDEX `IX_OutboxAttachment_MessageId` ON `OutboxAttachment` (`MessageId`);

CREATE TABLE `Inbox` (
	`RxMessageId` VARCHAR(50) NOT NULL,
	`AppCode` VARCHAR(20),
	`SourceDomain` VARCHAR(50),
	`AgentSender` VARCHAR(100),
	`Sender` VARCHAR(100),
	`Owner` LONGTEXT,
	`ReceiverType` CHAR(1),
	`ReceiverList` LONGTEXT,
	`BccList` LONGTEXT,
	`Subject` VARCHAR(200),
	`Content` LONGTEXT,
	`ContentType` VARCHAR(20),
	`AttachmentFlag` BOOL,
	`AlertFlag` BOOL,
	`MessageId` VARCHAR(50),
	`State` INTEGER,
	`TransmitTime` CHAR(20),
	`ReceiveTime` CHAR(20),
	`StatusTime` CHAR(20),
	`StatusLog` VARCHAR(200),
	`Priority` VARCHAR(1),
	`Keywords` VARCHAR(200),
	PRIMARY KEY (`RxMessageId`)
)CHARSET=utf8mb4;

CREATE INDEX `IX_Inbox_State` ON `Inbox` (`State`);

CREATE TABLE `InboxAttachment` (
	`AttachmentId` UUID NOT NULL,
	`MessageId` VARCHAR(50),
	`SeqNo` INTEGER,
	`FileName` VARCHAR(250),
	`FileType` VARCHAR(10),
	`FileSize` INTEGER,
	`FileData` LONGBLOB,
	`SourceUri` VARCHAR(2048),
	`DownloadFlag` INTEGER,
	PRIMARY KEY (`AttachmentId`)
)CHARSET=utf8mb4;

CREATE INDEX `IX_InboxAttachment_MessageId` ON `InboxAttachment` (`MessageId`);

CREATE TABLE `MpgTransition` (
	`Id` INTEGER NOT NULL AUTO_INCREMENT,
	`Box` VARCHAR(3) NOT NULL,
	`MessageKey` VARCHAR(50) NOT NULL,
	`FromState` INTEGER,
	`ToState` INTEGER NOT NULL,
	`At` VARCHAR(26) NOT NULL,
	`Reason` VARCHAR(200) NOT NULL,
	`Gateway` VARCHAR(100) NOT NULL,
	PRIMARY KEY (`Id`)
)CHARSET=utf8mb4;

CREATE INDEX `IX_MpgTransition_MessageKey` ON `MpgTransition` (`MessageKey`);

CREATE TABLE `MpgDropFile` (
	`TxMessageId` VARCHAR(50) NOT NULL,
	`FileName` VARCHAR(255) NOT NULL,
	`Sha256` CHAR(64) NOT NULL,
	`At` VARCHAR(26) NOT NULL,
	PRIMARY KEY (`TxMessageId`)
)CHARSET=utf8mb4;

CREATE TABLE `MpgExport` (
	`Name` VARCHAR(50) NOT NULL,
	`LastId` INTEGER NOT NULL,
	`At` VARCHAR(26) NOT NULL,
	PRIMARY KEY (`Name`)
)CHARSET=utf8mb4;
