-- MPG tables for mssql.
-- GENERATED from mpg/storage/tables.py by mpg.storage.ddl; do not edit by hand.
-- Regenerate with: python -m mpg.storage.ddl --write
-- Outbox, OutboxAttachment, Inbox, InboxAttachment are the integration contract;
-- MpgTransition is the gateway's own history table.

CREATE TABLE [Outbox] (
	[TxMessageId] NVARCHAR(50) NOT NULL,
	[AppCode] NVARCHAR(20) NULL,
	[SourceDomain] NVARCHAR(50) NULL,
	[AgentSender] NVARCHAR(100) NULL,
	[Sender] NVARCHAR(100) NULL,
	[ReceiverType] CHAR(1) NULL,
	[ReceiverList] NVARCHAR(max) NULL,
	[BccList] NVARCHAR(max) NULL,
	[Subject] NVARCHAR(200) NULL,
	[Content] NVARCHAR(max) NULL,
	[ContentType] NVARCHAR(20) NULL,
	[AttachmentList] NVARCHAR(max) NULL,
	[AlertFlag] BIT NULL,
	[MessageId] NVARCHAR(50) NULL,
	[State] INTEGER NULL,
	[TransmitTime] NCHAR(20) NULL,
	[StatusTime] NCHAR(20) NULL,
	[StatusLog] NVARCHAR(200) NULL,
	[Priority] NVARCHAR(1) NULL,
	[Keywords] NVARCHAR(200) NULL,
	PRIMARY KEY ([TxMessageId])
);

CREATE INDEX [IX_Outbox_State] ON [Outbox] ([State]);

CREATE TABLE [OutboxAttachment] (
	[AttachmentId] UNIQUEIDENTIFIER NOT NULL,
	[MessageId] NVARCHAR(50) NULL,
	[SeqNo] INTEGER NULL,
	[FileName] NVARCHAR(250) NULL,
	[FileType] NVARCHAR(10) NULL,
	[FileSize] INTEGER NULL,
	[FileData] VARBINARY(max) NULL,
	[SourceUri] NVARCHAR(2048) NULL,
	[DownloadFlag] INTEGER NULL,
	PRIMARY KEY ([AttachmentId])
);

CREATE INDEX [IX_OutboxAttachment_MessageId] ON [OutboxAttachment] ([MessageId]);

CREATE TABLE [Inbox] (
	[RxMessageId] NVARCHAR(50) NOT NULL,
	[AppCode] NVARCHAR(20) NULL,
	[SourceDomain] NVARCHAR(50) NULL,
	[AgentSender] NVARCHAR(100) NULL,
	[Sender] NVARCHAR(100) NULL,
	[Owner] NVARCHAR(max) NULL,
	[ReceiverType] CHAR(1) NULL,
	[ReceiverList] NVARCHAR(max) NULL,
	[BccList] NVARCHAR(max) NULL,
	[Subject] NVARCHAR(200) NULL,
	[Content] NVARCHAR(max) NULL,
	[ContentType] NVARCHAR(20) NULL,
	[AttachmentFlag] BIT NULL,
	[AlertFlag] BIT NULL,
	[MessageId] NVARCHAR(50) NULL,
	[State] INTEGER NULL,
	[TransmitTime] NCHAR(20) NULL,
	[ReceiveTime] NCHAR(20) NULL,
	[StatusTime] NCHAR(20) NULL,
	[StatusLog] NVARCHAR(200) NULL,
	[Priority] NVARCHAR(1) NULL,
	[Keywords] NVARCHAR(200) NULL,
	PRIMARY KEY ([RxMessageId])
);

CREATE INDEX [IX_Inbox_State] ON [Inbox] ([State]);

CREATE TABLE [InboxAttachment] (
	[AttachmentId] UNIQUEIDENTIFIER NOT NULL,
	[MessageId] NVARCHAR(50) NULL,
	[SeqNo] INTEGER NULL,
	[FileName] NVARCHAR(250) NULL,
	[FileType] NVARCHAR(10) NULL,
	[FileSize] INTEGER NULL,
	[FileData] VARBINARY(max) NULL,
	[SourceUri] NVARCHAR(2048) NULL,
	[DownloadFlag] INTEGER NULL,
	PRIMARY KEY ([AttachmentId])
);

CREATE INDEX [IX_InboxAttachment_MessageId] ON [InboxAttachment] ([MessageId]);

CREATE TABLE [MpgTransition] (
	[Id] INTEGER NOT NULL IDENTITY,
	[Box] NVARCHAR(3) NOT NULL,
	[MessageKey] NVARCHAR(50) NOT NULL,
	[FromState] INTEGER NULL,
	[ToState] INTEGER NOT NULL,
	[At] NVARCHAR(26) NOT NULL,
	[Reason] NVARCHAR(200) NOT NULL,
	[Gateway] NVARCHAR(100) NOT NULL,
	PRIMARY KEY ([Id])
);

CREATE INDEX [IX_MpgTransition_MessageKey] ON [MpgTransition] ([MessageKey]);

CREATE TABLE [MpgDropFile] (
	[TxMessageId] NVARCHAR(50) NOT NULL,
	[FileName] NVARCHAR(255) NOT NULL,
	[Sha256] CHAR(64) NOT NULL,
	[At] NVARCHAR(26) NOT NULL,
	PRIMARY KEY ([TxMessageId])
);

CREATE TABLE [MpgExport] (
	[Name] NVARCHAR(50) NOT NULL,
	[LastId] INTEGER NOT NULL,
	[At] NVARCHAR(26) NOT NULL,
	PRIMARY KEY ([Name])
);
