import { AbortMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { Readable } from "node:stream";
import { isUuid } from "../../mesh/index.ts";
import { backupNotFound, checkFile, checkKey, checkTenant } from "./backup-names.ts";
import type { BackupKey, BackupStorage } from "./backup-storage.ts";

/** The folder, beside a tenant's backups, of the markers that publish them. */
const published = ".published";

/** Objects deleted at once when a backup is removed. */
const deletesAtOnce = 8;

/** Options of {@link S3BackupStorage}. */
export interface S3BackupStorageOptions {
  /** The bucket the backups go in; it must exist. */
  bucket: string;
  /** The region to sign requests for (the bucket's, on AWS; what the store asks for elsewhere). */
  region: string;
  /** The store's URL, such as `https://minio.example:9000`; AWS S3 when absent. */
  endpoint?: string;
  /** Address the bucket in the path (`endpoint/bucket/key`) rather than the host name (`bucket.endpoint/key`): most stores other than AWS want this. */
  forcePathStyle?: boolean;
  /** An access key; when absent, the SDK's default credential chain (AWS_* variables, shared files, web identity, instance metadata). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Where in the bucket backups go: keys are `<prefix>/<tenant>/<backup id>/<file>`; "" for the bucket's root. */
  prefix: string;
  /** Bytes per part of a multipart upload (S3's least is 5 MiB); a file smaller than one part is put in one request. Default 16 MiB. */
  partSize?: number;
  /** Parts of one file uploaded at once; each is held in memory while it goes. Default 2. */
  partsAtOnce?: number;
  /** Keys asked for per page when listing (S3's most is 1000). */
  pageSize?: number;
}

/**
 * Backups as objects of an S3-compatible store: a backup's files under
 * `<prefix>/<tenant>/<backup id>/`, large ones in a multipart upload, and
 * once all are there a marker `<prefix>/<tenant>/.published/<backup id>`
 * listing them. Only a backup with its marker is listed or read, so that a
 * listed backup is always whole; deleting one removes the marker first.
 */
export class S3BackupStorage implements BackupStorage {
  readonly description: string;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #partSize: number;
  readonly #partsAtOnce: number;
  readonly #pageSize: number;

  constructor(options: S3BackupStorageOptions) {
    this.#client = new S3Client({
      region: options.region,
      ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
      forcePathStyle: options.forcePathStyle ?? false,
      ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
      // Files are authenticated by their encryption (AES-GCM) and the manifest's SHA-256; many
      // S3-compatible stores refuse or mishandle the checksums the SDK would otherwise add.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // A store that does not answer fails the backup instead of holding it forever.
      requestHandler: { connectionTimeout: 10_000, socketTimeout: 120_000 },
    });
    this.#bucket = options.bucket;
    this.#prefix = options.prefix.replace(/^\/+|\/+$/g, "");
    this.#partSize = options.partSize ?? 16 * 1024 ** 2;
    this.#partsAtOnce = options.partsAtOnce ?? 2;
    this.#pageSize = options.pageSize ?? 1000;
    this.description = `s3://${this.#bucket}/${this.#prefix}${options.endpoint === undefined ? "" : ` at ${options.endpoint}`}`;
  }

  async put(key: BackupKey, file: string, body: Readable): Promise<number> {
    const objectKey = this.#fileKey(key, file);
    let bytes = 0;
    const counted = Readable.from(
      (async function* () {
        for await (const chunk of body) {
          bytes += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
      })(),
    );
    const upload = new Upload({
      client: this.#client,
      params: { Bucket: this.#bucket, Key: objectKey, Body: counted, ContentType: "application/octet-stream" },
      partSize: this.#partSize,
      queueSize: this.#partsAtOnce,
      // Aborted below instead, so that a failed abort does not hide why the upload failed.
      leavePartsOnError: true,
    });
    try {
      await upload.done();
    } catch (error) {
      counted.destroy();
      body.destroy();
      throw await this.#abortUpload(objectKey, upload.uploadId, error);
    }
    return bytes;
  }

  async publish(key: BackupKey): Promise<void> {
    const files: Record<string, number> = {};
    const folder = this.#backupFolder(key);
    for await (const object of this.#objects(folder)) {
      files[object.key.slice(folder.length)] = object.size;
    }
    if (Object.keys(files).length === 0) {
      throw backupNotFound(`backup ${key.backupId} of tenant "${key.tenantId}" has no files in ${this.description} to publish`);
    }
    await this.#client.send(
      new PutObjectCommand({
        Bucket: this.#bucket,
        Key: this.#markerKey(key),
        Body: JSON.stringify({ tenantId: key.tenantId, backupId: key.backupId, files }),
        ContentType: "application/json",
      }),
    );
  }

  async get(key: BackupKey, file: string): Promise<Readable> {
    const objectKey = this.#fileKey(key, file);
    const missing = () => backupNotFound(`${file} of backup ${key.backupId} of tenant "${key.tenantId}" is not in ${this.description}`);
    await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: this.#markerKey(key) })).catch((error: unknown) => {
      throw isNotFound(error) ? missing() : error;
    });
    const { Body } = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: objectKey })).catch((error: unknown) => {
      throw isNotFound(error) ? missing() : error;
    });
    return Body as Readable;
  }

  async list(tenantId: string): Promise<string[]> {
    const folder = `${this.#tenantFolder(tenantId)}${published}/`;
    const ids: string[] = [];
    for await (const object of this.#objects(folder)) {
      const id = object.key.slice(folder.length);
      if (isUuid(id)) {
        ids.push(id);
      }
    }
    return ids;
  }

  async delete(key: BackupKey): Promise<void> {
    // The marker goes first, so that no reader finds a backup with some of its files gone.
    await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#markerKey(key) }));
    // One key per request: DeleteObjects needs checksums that not every S3-compatible store takes.
    const keys: string[] = [];
    for await (const object of this.#objects(this.#backupFolder(key))) {
      keys.push(object.key);
    }
    for (let at = 0; at < keys.length; at += deletesAtOnce) {
      await Promise.all(keys.slice(at, at + deletesAtOnce).map((Key) => this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key }))));
    }
  }

  /**
   * Aborts a failed multipart upload, so that its parts are not kept (and
   * paid for); returns the error to throw: the upload's, with the abort's
   * failure added when the parts had to be left.
   */
  async #abortUpload(objectKey: string, uploadId: string | undefined, error: unknown): Promise<unknown> {
    if (uploadId === undefined) {
      return error;
    }
    try {
      await this.#client.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: objectKey, UploadId: uploadId }));
      return error;
    } catch (abortError) {
      const why = error instanceof Error ? error.message : String(error);
      const abortWhy = abortError instanceof Error ? abortError.message : String(abortError);
      return new Error(`${why}; and the parts uploaded of ${objectKey} (upload ${uploadId}) could not be removed: ${abortWhy}`, { cause: error });
    }
  }

  /** Closes the client's connections. */
  close(): void {
    this.#client.destroy();
  }

  /** Every object under a folder (a key prefix ending in "/"), page by page. */
  async *#objects(folder: string): AsyncGenerator<{ key: string; size: number }> {
    let token: string | undefined;
    do {
      const page = await this.#client.send(
        new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: folder, MaxKeys: this.#pageSize, ...(token === undefined ? {} : { ContinuationToken: token }) }),
      );
      for (const object of page.Contents ?? []) {
        yield { key: object.Key!, size: object.Size ?? 0 };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  #tenantFolder(tenantId: string): string {
    return `${this.#prefix === "" ? "" : `${this.#prefix}/`}${checkTenant(tenantId)}/`;
  }

  #backupFolder(key: BackupKey): string {
    const { tenantId, backupId } = checkKey(key);
    return `${this.#tenantFolder(tenantId)}${backupId}/`;
  }

  #fileKey(key: BackupKey, file: string): string {
    return `${this.#backupFolder(key)}${checkFile(file)}`;
  }

  #markerKey(key: BackupKey): string {
    const { tenantId, backupId } = checkKey(key);
    return `${this.#tenantFolder(tenantId)}${published}/${backupId}`;
  }
}

/** Whether the store said there is no such key (GetObject: NoSuchKey; HeadObject, which has no body: NotFound). */
function isNotFound(error: unknown): boolean {
  return error instanceof Error && (error.name === "NoSuchKey" || error.name === "NotFound");
}
