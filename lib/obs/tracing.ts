/**
 * @module
 * Pipeline-stage spans for Deno's OpenTelemetry (`OTEL_DENO=true`), recorded after the fact from the
 * timings metrics take anyway: no wrapping of the request path, nothing when tracing is off.
 */

/** The part of an OpenTelemetry `Tracer` used here (`@opentelemetry/api` fits). */
export interface TracerLike {
  startSpan(
    name: string,
    options: { startTime: number; attributes?: Record<string, string | number | boolean> },
  ): { end(endTime: number): void };
}

/** Records finished pipeline stages as spans. */
export interface StageTracer {
  stage(stage: string, startMono: number, endMono: number): void;
}

/** Options for {@linkcode createStageTracer}. */
export interface StageTracerOptions {
  /** `performance.timeOrigin`, to turn monotonic readings into epoch ms. */
  timeOrigin: number;
}

/** Creates a stage tracer over an OpenTelemetry tracer (`trace.getTracer("edge-personalizer")`). */
export function createStageTracer(tracer: TracerLike, options: StageTracerOptions): StageTracer {
  return {
    stage: (stage, startMono, endMono) => {
      tracer.startSpan(`edge.${stage}`, {
        startTime: options.timeOrigin + startMono,
        attributes: { "edge.stage": stage },
      }).end(options.timeOrigin + endMono);
    },
  };
}
