export { provisioningSteps, rollbackSteps, type ProvisioningStep, type RollbackStep } from "./provisioning-steps.ts";
export { TemplateDatabases, type TemplateDatabasesOptions } from "./template-databases.ts";
export { TenantProvisioner, type TenantProvisionerOptions } from "./tenant-provisioner.ts";
