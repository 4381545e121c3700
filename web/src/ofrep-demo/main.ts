// A page a product team would write: the OpenFeature web SDK with the OFREP
// provider against this seghub, with a client key. Kept out of the console's
// bundle (its own entry) so the console's first load does not carry the SDK.
import { OpenFeature, ProviderEvents } from "@openfeature/web-sdk";
import { OFREPWebProvider } from "@openfeature/ofrep-web-provider";
import { describeEvaluation, describeResponses, pollInterval } from "./describe";
import "./demo.css";

const form = document.getElementById("ofrep-form") as HTMLFormElement;
const result = document.getElementById("ofrep-result")!;
const responses = document.getElementById("ofrep-responses")!;
const statuses: number[] = [];

// Bulk answers as the provider receives them, so the page shows when a
// re-fetch cost a 304.
const recordingFetch: typeof fetch = async (input, init) => {
  const res = await fetch(input, init);
  if (String(input instanceof Request ? input.url : input).endsWith("/ofrep/v1/evaluate/flags")) {
    statuses.push(res.status);
    responses.textContent = describeResponses(statuses);
  }
  return res;
};

async function evaluate(key: string, user: string, flag: string) {
  statuses.length = 0;
  const provider = new OFREPWebProvider({
    baseUrl: window.location.origin,
    headers: [["Authorization", `Bearer ${key}`]],
    fetchImplementation: recordingFetch,
    pollInterval: pollInterval(window.location.search),
    changeDetection: "polling",
    // A demo shows the network's answer, not a cached one.
    cacheMode: "disabled",
  });
  await OpenFeature.setContext({ targetingKey: user });
  await OpenFeature.setProviderAndWait(provider);
  const show = () => {
    result.textContent = describeEvaluation(flag, OpenFeature.getClient().getBooleanDetails(flag, false));
  };
  show();
  // Polling that finds a change re-renders; a 304 changes nothing.
  OpenFeature.getClient().addHandler(ProviderEvents.ConfigurationChanged, show);
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const data = new FormData(form);
  result.textContent = "Evaluating…";
  evaluate(String(data.get("key")), String(data.get("user")), String(data.get("flag"))).catch((err: unknown) => {
    result.textContent = `Could not evaluate: ${err instanceof Error ? err.message : String(err)}`;
  });
});
