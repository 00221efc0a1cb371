import { createRegistry, toBinary, type DescFile, type DescService, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import { ServerReflection, type ServerReflectionRequest } from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionAlpha } from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";

export { ServerReflection, ServerReflectionAlpha };

/**
 * Implements gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, the
 * same handler) from the generated descriptors of the services served, so
 * that `buf curl` and grpcurl can list and call every method with no
 * `.proto` files at hand.
 */
export function reflectionService(services: DescService[]): {
  v1: ServiceImpl<typeof ServerReflection>;
  v1alpha: ServiceImpl<typeof ServerReflectionAlpha>;
} {
  const files = new Map<string, DescFile>();
  const collect = (file: DescFile) => {
    if (!files.has(file.name)) {
      files.set(file.name, file);
      file.dependencies.forEach(collect);
    }
  };
  services.forEach((s) => collect(s.file));
  const registry = createRegistry(...files.values());
  const names = services.map((s) => s.typeName).sort();

  async function* info(requests: AsyncIterable<ServerReflectionRequest>) {
    const sent = new Set<string>();
    for await (const request of requests) {
      yield { validHost: request.host, originalRequest: request, messageResponse: answer(request, registry, files, names, sent) };
    }
  }
  return {
    v1: { serverReflectionInfo: info },
    v1alpha: { serverReflectionInfo: info as never },
  };
}

type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

function answer(request: ServerReflectionRequest, registry: Registry, files: Map<string, DescFile>, services: string[], sent: Set<string>): Answer {
  const req = request.messageRequest;
  switch (req.case) {
    case "listServices":
      return { case: "listServicesResponse", value: { service: services.map((name) => ({ name })) } };
    case "fileByFilename": {
      const file = files.get(req.value);
      return file ? withDependencies(file, sent) : notFound(`file "${req.value}" not found`);
    }
    case "fileContainingSymbol": {
      const file = fileOfSymbol(registry, req.value);
      return file ? withDependencies(file, sent) : notFound(`symbol "${req.value}" not found`);
    }
    case "fileContainingExtension": {
      const extendee = registry.getMessage(req.value.containingType);
      const extension = extendee && registry.getExtensionFor(extendee, req.value.extensionNumber);
      return extension ? withDependencies(extension.file, sent) : notFound(`extension ${req.value.extensionNumber} of "${req.value.containingType}" not found`);
    }
    case "allExtensionNumbersOfType": {
      const extendee = registry.getMessage(req.value);
      if (!extendee) {
        return notFound(`type "${req.value}" not found`);
      }
      const numbers: number[] = [];
      for (const type of registry) {
        if (type.kind === "extension" && type.extendee.typeName === extendee.typeName) {
          numbers.push(type.number);
        }
      }
      return { case: "allExtensionNumbersResponse", value: { baseTypeName: extendee.typeName, extensionNumber: numbers } };
    }
    default:
      return { case: "errorResponse", value: { errorCode: Code.InvalidArgument, errorMessage: "empty reflection request" } };
  }
}

function notFound(message: string): Answer {
  return { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: message } };
}

/** A symbol names a type, a service, or a member of one (method, field, enum value). */
function fileOfSymbol(registry: Registry, symbol: string): DescFile | undefined {
  const type = registry.get(symbol);
  if (type) {
    return type.file;
  }
  const parent = symbol.slice(0, Math.max(0, symbol.lastIndexOf(".")));
  return parent === "" ? undefined : registry.get(parent)?.file;
}

/** The file and those of its dependencies not yet sent on this stream. */
function withDependencies(file: DescFile, sent: Set<string>): Answer {
  const out: Uint8Array[] = [];
  const visit = (f: DescFile) => {
    if (sent.has(f.name)) {
      return;
    }
    sent.add(f.name);
    out.push(toBinary(FileDescriptorProtoSchema, f.proto));
    f.dependencies.forEach(visit);
  };
  if (sent.has(file.name)) {
    // Asked again: answer with the file itself, as the client evidently lost it.
    out.push(toBinary(FileDescriptorProtoSchema, file.proto));
  } else {
    visit(file);
  }
  return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
}
