/**
 * Second-stage checks, on documents whose shape is already valid: references between steps, nodes
 * that appear twice, and whether a playbook fits an inventory.
 */
import { didYouMean, type Problem } from './errors';
import { resolveNodeSsh, rolloutNodes, type Inventory, type Playbook, type Step } from './schema';
import { formatPath } from './zod-issues';

type PlaybookDocument = Omit<Playbook, 'source'>;
type InventoryDocument = Omit<Inventory, 'source'>;

const stepPath = (index: number, ...rest: PropertyKey[]) => formatPath(['steps', index, ...rest]);

/** Where each name is first defined, for "already defined at …" and "did you mean …" messages. */
class FirstDefinitions {
  private readonly places = new Map<string, number>();
  define(name: string, index: number): number | undefined {
    const earlier = this.places.get(name);
    if (earlier === undefined) this.places.set(name, index);
    return earlier;
  }
  at(name: string): number | undefined {
    return this.places.get(name);
  }
  names(): string[] {
    return [...this.places.keys()];
  }
}

/** Runtime handlers the playbook adds to containerd, with the index of the step that adds each. */
function addedHandlers(steps: readonly Step[]): FirstDefinitions {
  const handlers = new FirstDefinitions();
  steps.forEach((step, index) => {
    if (step.kind === 'containerd-patch' && step.action === 'add') step.runtimes.forEach((runtime) => handlers.define(runtime.name, index));
  });
  return handlers;
}

function handlerProblem(handler: string, handlers: FirstDefinitions): string | undefined {
  if (handlers.at(handler) !== undefined) return undefined;
  const added = handlers.names();
  const known = added.length > 0 ? `; handlers added: ${added.join(', ')}` : '';
  return `no containerd-patch step adds a runtime ${JSON.stringify(handler)}${didYouMean(handler, added)}${known} — add it to a containerd-patch step's [[steps.runtimes]]`;
}

/** Cross-references inside one playbook. */
export function crossCheckPlaybook(playbook: PlaybookDocument, file: string): Problem[] {
  const problems: Problem[] = [];
  const add = (path: string, message: string) => problems.push({ file, path, message });
  const ids = new FirstDefinitions();
  const runtimeClasses = new FirstDefinitions();
  const runtimes = new FirstDefinitions();
  const handlers = addedHandlers(playbook.steps);

  playbook.steps.forEach((step, index) => {
    const earlierId = ids.define(step.id, index);
    if (earlierId !== undefined) {
      add(stepPath(index, 'id'), `${JSON.stringify(step.id)} is already the id of steps[${earlierId}]; step ids must be unique — rename one`);
    }
    switch (step.kind) {
      case 'package-install':
        if (step.action === 'install') {
          step.packages.forEach((pkg, pkgIndex) => {
            if (pkg.version === undefined) {
              add(stepPath(index, 'packages', pkgIndex, 'version'), `required when action = "install": pin the exact version, e.g. { name = "${pkg.name}", version = "3.2.0" }`);
            }
          });
        }
        break;
      case 'containerd-patch':
        if (step.mode === 'drop-in' && step.drop_in_path === step.config_path) {
          add(stepPath(index, 'drop_in_path'), `must differ from config_path (${step.config_path}): the drop-in is a separate file that config_path imports`);
        }
        if (step.action === 'add') {
          step.runtimes.forEach((runtime, runtimeIndex) => {
            const earlier = runtimes.define(runtime.name, index);
            if (earlier !== undefined) {
              add(stepPath(index, 'runtimes', runtimeIndex, 'name'), `runtime ${JSON.stringify(runtime.name)} is already added by steps[${earlier}]; add each runtime once`);
            }
          });
        }
        break;
      case 'service-restart':
        step.wait_for_handlers.forEach((handler, handlerIndex) => {
          const message = handlerProblem(handler, handlers);
          if (message) add(stepPath(index, 'wait_for_handlers', handlerIndex), message);
        });
        break;
      case 'readiness-gate':
        step.require_runtime_handlers.forEach((handler, handlerIndex) => {
          const message = handlerProblem(handler, handlers);
          if (message) add(stepPath(index, 'require_runtime_handlers', handlerIndex), message);
        });
        break;
      case 'runtime-class':
        if (step.action === 'apply') {
          runtimeClasses.define(step.name, index);
          const message = handlerProblem(step.handler, handlers);
          if (message) add(stepPath(index, 'handler'), message);
        }
        break;
      case 'verification-pod': {
        const created = runtimeClasses.at(step.runtime_class);
        if (created === undefined) {
          const later = playbook.steps.findIndex((other) => other.kind === 'runtime-class' && other.action === 'apply' && other.name === step.runtime_class);
          add(
            stepPath(index, 'runtime_class'),
            later >= 0
              ? `runtime class ${JSON.stringify(step.runtime_class)} is only created later, by steps[${later}]; move this verification-pod after it`
              : `no runtime-class step creates ${JSON.stringify(step.runtime_class)}${didYouMean(step.runtime_class, runtimeClasses.names())} — add a runtime-class step before this one, or name one that exists`,
          );
        }
        break;
      }
      default:
        break;
    }
  });
  return problems;
}

/** Nodes listed twice (by name, or by address and port), and a control-plane host that exists. */
export function crossCheckInventory(inventory: InventoryDocument, file: string): Problem[] {
  const problems: Problem[] = [];
  const names = new FirstDefinitions();
  const endpoints = new FirstDefinitions();
  inventory.nodes.forEach((node, index) => {
    const earlierName = names.define(node.name, index);
    if (earlierName !== undefined) {
      problems.push({ file, path: formatPath(['nodes', index, 'name']), message: `${JSON.stringify(node.name)} is already the name of nodes[${earlierName}]; each node is listed once — remove or rename one` });
    }
    const port = resolveNodeSsh(inventory, node).port;
    const earlierEndpoint = endpoints.define(`${node.address.toLowerCase()} ${port}`, index);
    if (earlierEndpoint !== undefined) {
      const other = inventory.nodes[earlierEndpoint].name;
      problems.push({
        file,
        path: formatPath(['nodes', index, 'address']),
        message: `${node.address} port ${port} is already the address of nodes[${earlierEndpoint}] (${JSON.stringify(other)}); a host is listed once — remove the duplicate, or give it its own address or ssh.port`,
      });
    }
  });
  const controlPlane = inventory.kubernetes?.control_plane;
  if (controlPlane !== undefined && names.at(controlPlane) === undefined) {
    problems.push({
      file,
      path: 'kubernetes.control_plane',
      message: `no [[nodes]] entry is named ${JSON.stringify(controlPlane)}${didYouMean(controlPlane, names.names())}; add the host that runs kubectl as a node with role = "control-plane"`,
    });
  }
  return problems;
}

/** The first step that needs kubectl on the control-plane host, if any. */
function firstKubernetesStep(playbook: PlaybookDocument): number {
  return playbook.steps.findIndex((step) => {
    switch (step.kind) {
      case 'readiness-gate':
      case 'node-label':
      case 'runtime-class':
      case 'verification-pod':
      case 'rollback':
        return true;
      case 'service-restart':
        return (step.drain ?? playbook.rollout.drain) || (step.cordon ?? false);
      default:
        return false;
    }
  });
}

/** Whether a playbook can run on an inventory: Kubernetes access, target nodes, root rights. */
export function crossCheckPairing(playbook: PlaybookDocument, inventory: InventoryDocument, files: { playbook: string; inventory: string }): Problem[] {
  const problems: Problem[] = [];
  const add = (path: string, message: string) => problems.push({ file: files.inventory, path, message });
  const kubernetesStep = firstKubernetesStep(playbook);
  if (kubernetesStep >= 0 && inventory.kubernetes === undefined) {
    const step = playbook.steps[kubernetesStep];
    add('kubernetes', `required: ${files.playbook} steps[${kubernetesStep}] (${step.id}, ${step.kind}) uses the Kubernetes API — add [kubernetes] with kubeconfig = "FILE" (a kubeconfig on the worker, e.g. for deploy/rbac.yaml's ServiceAccount) or control_plane = "NODE", the node on which kubectl runs`);
  }
  const targets = rolloutNodes(inventory);
  if (targets.length === 0) add('nodes', 'no node has role = "worker", so there is nothing to roll out to');
  inventory.nodes.forEach((node, index) => {
    if (node.role !== 'worker') return;
    const ssh = resolveNodeSsh(inventory, node);
    if (ssh.user !== 'root' && !ssh.sudo) {
      add(formatPath(['nodes', index]), `${node.name} logs in as ${JSON.stringify(ssh.user)} without sudo, but ${files.playbook} changes system files — set sudo = true in [ssh] (or in this node's ssh table), or log in as root`);
    }
  });
  return problems;
}
