/** The instrumentation scope of everything Tenantry records. */
export const instrumentationScope = "tenantry";

/** Calls served per tenant, by duration (a histogram whose count is the tenant's calls). */
export const tenantCallDuration = "tenantry.tenant.call.duration";

/** Calls served per tenant that ended with an error code. */
export const tenantCallErrors = "tenantry.tenant.call.errors";

/** Metric instruments that carry a tenant id, whose series are bounded per process (see `TENANTRY_METRICS_TENANT_SERIES`). */
export const perTenantInstruments = [tenantCallDuration, tenantCallErrors];
