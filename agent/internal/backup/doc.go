// Package backup is the agent's backup pipeline: it dumps a source
// (a PostgreSQL or MySQL/MariaDB database, or a directory), compresses,
// encrypts, checksums and stores it at a destination (a local directory,
// an S3-compatible bucket, or an SFTP server) in one stream, and reads such
// an object back to verify it, restore it or hand its raw bytes on.
//
// # The stream
//
//	dump (pg_dump -Fc -Z0 | mariadb-dump --single-transaction | tar)
//	  -> zstd (klauspost/compress, fastest level, 2 MiB window)
//	  -> age (X25519 recipient: the agent never holds the identity of a backup)
//	  -> SHA-256 + byte count of the stored (encrypted) bytes
//	  -> upload
//
// Nothing is staged: the dump's stdout is compressed and encrypted as it
// arrives and handed to the uploader through pipes of four 64 KiB chunks
// (compression, encryption and upload run in goroutines of their own, like
// the processes of a shell pipeline), so a slow destination slows the dump
// instead of growing a buffer.
//
// # Memory bound
//
// Independent of the size of the backup, the pipeline holds at most:
//   - S3: one part buffer of [S3PartSize] (16 MiB), one upload at a time.
//     With S3's 10,000-part limit that makes the largest object 156 GiB;
//     a bigger backup fails with a clear error rather than buffering more.
//   - SFTP: up to 64 outstanding 32 KiB writes (2 MiB); local: 32 KiB.
//   - zstd: two encoder blocks and the 2 MiB window (about 8 MiB).
//   - age: one 64 KiB chunk each way; the two stage pipes 256 KiB each;
//     copies use 32-64 KiB buffers.
//
// so about 30 MiB above the process's baseline with S3, about 12 MiB with a
// local or SFTP destination.
// Measured (BENCHMARKS.md, "Backup pipeline"): five backups of a 1.4 GB
// database to a local directory took the whole berth-agent process (16.6
// MiB resident before) to a peak of 28.5 MiB (VmHWM).
//
// # Failure
//
// A backup is returned as successful only after the destination has the
// whole object under its key. A dump that exits non-zero (the error carries
// the tail of its stderr, with any password of the connection URL masked),
// an empty or missing source, a missing destination, an upload that fails
// part way or a canceled context all return an error, and none of them
// leaves an object under the key: S3 uploads are multipart and aborted on
// failure, local and SFTP uploads go to a temporary name that is renamed
// only when complete and removed otherwise. Canceling the context kills the
// dump's whole process group (TERM, then KILL).
//
// A process that dies (kill -9, a crash, power loss) cannot clean up: it
// leaves KEY.partial-<16 hex> on a local or SFTP destination, or an
// unfinished multipart upload of KEY on S3. [Delete] of KEY removes those
// too, and only those (keys are unique per backup): the controller queues
// such a delete as the cleanup of every backup that ended without
// succeeding after it was sent to an agent.
//
// Credentials (S3 keys, SFTP passwords and keys, database passwords) live
// only in memory: they are handed to child processes through their
// environment (PGPASSWORD, MYSQL_PWD), never on a command line, never in a
// file, never in a log line or an error.
package backup
