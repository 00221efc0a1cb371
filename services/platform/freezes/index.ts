export { maxFreezeTtlMs, TenantWriteFreezes, type TenantWriteFreezesOptions } from "./tenant-write-freezes.ts";
