export {
  choosePoolDatabase,
  dropPooledSchemas,
  ensurePooledSchemas,
  pooledProvisioningSteps,
  pooledProvisioningStepTable,
  pooledRollbackSteps,
  provisioningPlanOf,
  provisioningSteps,
  provisioningStepTable,
  rollbackSteps,
  rollbackStepTable,
  type ProvisioningStep,
  type RollbackStep,
  type StepContext,
} from "./provisioning-steps.ts";
export { DatabaseStock, type DatabaseStockOptions } from "./database-stock.ts";
export { PooledStock, type PooledStockOptions } from "./pooled-stock.ts";
export { TemplateDatabases, type TemplateDatabasesOptions } from "./template-databases.ts";
export { TenantProvisioner, type TenantProvisionerOptions } from "./tenant-provisioner.ts";
export { allowGeneration, dropGeneration, freeGeneration, generationOf, generationPrefix, schemasOfGeneration, type PooledSchemas } from "./schema-generations.ts";
