export { changeableTenantFields, TenantLifecycle, type TenantLifecycleOptions } from "./tenant-lifecycle.ts";
