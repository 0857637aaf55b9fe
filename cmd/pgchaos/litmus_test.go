package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiRequest is one request the fake API server received.
type apiRequest struct {
	Method, Path, ContentType, Auth string
	Body                            any // decoded JSON, nil for none
}

// fakeAPIServer is a fake of the Kubernetes API server's REST paths for
// ChaosResults (no cluster runs where pgchaos is tested): an httptest TLS
// server whose CA, a token and a namespace are written to a temporary
// service account directory, with KUBERNETES_SERVICE_HOST/PORT and the
// environment Litmus's chaos-runner gives an experiment pod set. answer
// says what each request gets; every request is recorded.
func fakeAPIServer(t *testing.T, answer func(r *http.Request) (int, string)) func() []apiRequest {
	t.Helper()
	var mu sync.Mutex
	var got []apiRequest
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		req := apiRequest{Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), Auth: r.Header.Get("Authorization")}
		if len(data) > 0 {
			if err := json.Unmarshal(data, &req.Body); err != nil {
				t.Errorf("%s %s: body is not JSON: %v\n%s", r.Method, r.URL.Path, err, data)
			}
		}
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		code, body := answer(r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for name, data := range map[string]string{"ca.crt": string(ca), "token": "sa-token\n", "namespace": "chaos\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := serviceAccountDir
	serviceAccountDir = dir
	t.Cleanup(func() { serviceAccountDir = old })
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)
	t.Setenv("CHAOSENGINE", "pgchaos")
	t.Setenv("EXPERIMENT_NAME", "pgchaos-slow-selects")
	t.Setenv("CHAOS_NAMESPACE", "chaos")
	t.Setenv("CHAOS_UID", "3f1c-uid")
	t.Setenv("INSTANCE_ID", "")
	return func() []apiRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]apiRequest(nil), got...)
	}
}

// jsonValue decodes s, for comparing with a recorded body.
func jsonValue(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	return v
}

func checkRequests(t *testing.T, got, want []apiRequest) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d requests, want %d:\n%+v", len(got), len(want), got)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			g, _ := json.Marshal(got[i])
			w, _ := json.Marshal(want[i])
			t.Errorf("request %d:\n got %s\nwant %s", i, g, w)
		}
	}
}

const (
	resultsPath = "/apis/litmuschaos.io/v1alpha1/namespaces/chaos/chaosresults"
	resultPath  = resultsPath + "/pgchaos-pgchaos-slow-selects"
)

// A passing run creates the ChaosResult as running and awaited, then
// records Pass; pgchaos exits 0.
func TestRunLitmusResultPass(t *testing.T) {
	requests := fakeAPIServer(t, func(r *http.Request) (int, string) {
		if r.Method == http.MethodPost {
			return http.StatusCreated, `{"kind":"ChaosResult"}`
		}
		return http.StatusOK, `{"kind":"ChaosResult"}`
	})
	file := experimentFile(t, "passes", `method:
  - {name: settle, wait: 100ms}
verify:
  - {name: one, type: sql, sql: SELECT 1, expect: {equals: 1}}
`)
	code, _, stderr := runCLI(t, "run", file, "--var", "dsn="+newDB(t), "--litmus-result")
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if !strings.Contains(stderr, "ChaosResult chaos/pgchaos-pgchaos-slow-selects records exit 0") {
		t.Errorf("stderr does not say the verdict is recorded:\n%s", stderr)
	}
	checkRequests(t, requests(), []apiRequest{
		{Method: "POST", Path: resultsPath, ContentType: "application/json", Auth: "Bearer sa-token", Body: jsonValue(t, `{
			"apiVersion": "litmuschaos.io/v1alpha1", "kind": "ChaosResult",
			"metadata": {"name": "pgchaos-pgchaos-slow-selects", "namespace": "chaos", "labels": {"chaosUID": "3f1c-uid"}},
			"spec": {"engine": "pgchaos", "experiment": "pgchaos-slow-selects"},
			"status": {
				"experimentStatus": {"phase": "Running", "verdict": "Awaited", "probeSuccessPercentage": "Awaited", "errorOutput": null},
				"history": {"passedRuns": 0, "failedRuns": 0, "stoppedRuns": 0}}}`)},
		{Method: "PATCH", Path: resultPath, ContentType: "application/merge-patch+json", Auth: "Bearer sa-token", Body: jsonValue(t, `{
			"status": {
				"experimentStatus": {"phase": "Completed", "verdict": "Pass", "probeSuccessPercentage": "100", "errorOutput": null},
				"history": {"passedRuns": 1, "failedRuns": 0, "stoppedRuns": 0}}}`)},
	})
}

// A failing run whose ChaosResult is there from an earlier run of the
// engine reads its history, sets it running again, and records Fail with
// the failed verifier named and the history counted on; pgchaos exits 0,
// as the verdict is in the ChaosResult.
func TestRunLitmusResultFail(t *testing.T) {
	requests := fakeAPIServer(t, func(r *http.Request) (int, string) {
		switch r.Method {
		case http.MethodPost:
			return http.StatusConflict, `{"kind":"Status","status":"Failure","reason":"AlreadyExists","code":409}`
		case http.MethodGet:
			return http.StatusOK, `{"kind":"ChaosResult","status":{"experimentStatus":{"phase":"Completed","verdict":"Pass"},
				"history":{"passedRuns":2,"failedRuns":1,"stoppedRuns":0,"targets":[]}}}`
		}
		return http.StatusOK, `{"kind":"ChaosResult"}`
	})
	file := experimentFile(t, "fails", `steady_state:
  probes:
    - {name: answers, sql: SELECT 1, expect: {min: 1}}
verify:
  - {name: two, type: sql, sql: SELECT 1, expect: {equals: 2}}
`)
	code, stdout, _ := runCLI(t, "run", file, "--var", "dsn="+newDB(t), "--litmus-result")
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if !strings.Contains(stdout, "❌ failed") {
		t.Errorf("stdout lacks the failed summary")
	}
	reqs := requests()
	checkRequests(t, reqs, []apiRequest{
		reqs[0], // the create, as in TestRunLitmusResultPass
		{Method: "GET", Path: resultPath, Auth: "Bearer sa-token"},
		{Method: "PATCH", Path: resultPath, ContentType: "application/merge-patch+json", Auth: "Bearer sa-token", Body: jsonValue(t, `{
			"metadata": {"labels": {"chaosUID": "3f1c-uid"}},
			"spec": {"engine": "pgchaos", "experiment": "pgchaos-slow-selects"},
			"status": {
				"experimentStatus": {"phase": "Running", "verdict": "Awaited", "probeSuccessPercentage": "Awaited", "errorOutput": null},
				"history": {"passedRuns": 2, "failedRuns": 1, "stoppedRuns": 0}}}`)},
		{Method: "PATCH", Path: resultPath, ContentType: "application/merge-patch+json", Auth: "Bearer sa-token", Body: jsonValue(t, `{
			"status": {
				"experimentStatus": {"phase": "Completed", "verdict": "Fail", "probeSuccessPercentage": "66",
					"errorOutput": {"reason": "failed: verify: two"}},
				"history": {"passedRuns": 2, "failedRuns": 2, "stoppedRuns": 0}}}`)},
	})
	if reqs[0].Method != "POST" || reqs[0].Path != resultsPath {
		t.Errorf("first request %s %s, want the create", reqs[0].Method, reqs[0].Path)
	}
}

// A setup failure is recorded as Error with the reason; a ChaosResult
// that cannot be written does not hide the run's result: the verdict of a
// passing run that cannot be recorded is exit 3, and the API server's
// answer is on stderr.
func TestRunLitmusResultErrors(t *testing.T) {
	litmusRetryWait = time.Millisecond
	t.Cleanup(func() { litmusRetryWait = time.Second })
	t.Run("setup", func(t *testing.T) {
		requests := fakeAPIServer(t, func(r *http.Request) (int, string) {
			if r.Method == http.MethodPost {
				return http.StatusCreated, `{}`
			}
			return http.StatusOK, `{}`
		})
		file := experimentFile(t, "setup", "")
		code, _, _ := runCLI(t, "run", file, "--var", "dsn=postgres://nobody@127.0.0.1:1/none?connect_timeout=1", "--litmus-result")
		reqs := requests()
		if code != 0 || len(reqs) != 2 {
			t.Fatalf("exit %d, %d requests; want 0, 2", code, len(reqs))
		}
		st := reqs[1].Body.(map[string]any)["status"].(map[string]any)["experimentStatus"].(map[string]any)
		eo, _ := st["errorOutput"].(map[string]any)
		if st["phase"] != "Error" || st["verdict"] != "Error" || eo["errorCode"] != "GENERIC_ERROR" || !strings.HasPrefix(eo["reason"].(string), "pgchaos run exit 3: ") {
			t.Errorf("recorded %v", st)
		}
	})
	t.Run("unwritable", func(t *testing.T) {
		requests := fakeAPIServer(t, func(r *http.Request) (int, string) {
			if r.Method == http.MethodPost {
				return http.StatusCreated, `{}`
			}
			return http.StatusForbidden, `{"kind":"Status","message":"chaosresults.litmuschaos.io is forbidden: cannot patch"}`
		})
		file := experimentFile(t, "passes", "")
		code, stdout, stderr := runCLI(t, "run", file, "--var", "dsn="+newDB(t), "--litmus-result")
		if code != 3 || len(requests()) != 2 {
			t.Fatalf("exit %d after %d requests; want 3 after 2 (a 403 is not retried)", code, len(requests()))
		}
		if !strings.Contains(stderr, "the verdict is not recorded: updating ChaosResult chaos/pgchaos-pgchaos-slow-selects: 403 Forbidden: chaosresults.litmuschaos.io is forbidden") ||
			!strings.Contains(stdout, "✅ passed") {
			t.Errorf("stderr:\n%s\nstdout:\n%s", stderr, stdout)
		}
	})
	t.Run("uncreatable", func(t *testing.T) {
		requests := fakeAPIServer(t, func(r *http.Request) (int, string) { return http.StatusServiceUnavailable, `{}` })
		file := experimentFile(t, "never", "")
		code, _, stderr := runCLI(t, "run", file, "--var", "dsn="+newDB(t), "--litmus-result")
		if code != 3 || len(requests()) != litmusAttempts || !strings.Contains(stderr, "nothing ran") {
			t.Fatalf("exit %d after %d requests; want 3 after %d, nothing run", code, len(requests()), litmusAttempts)
		}
	})
	t.Run("not in a pod", func(t *testing.T) {
		fakeAPIServer(t, func(r *http.Request) (int, string) { return http.StatusCreated, `{}` })
		t.Setenv("CHAOSENGINE", "")
		code, _, stderr := runCLI(t, "run", experimentFile(t, "x", ""), "--var", "dsn=x", "--litmus-result")
		if code != 2 || !strings.Contains(stderr, "CHAOSENGINE and EXPERIMENT_NAME are not set") {
			t.Fatalf("exit %d, want 2 with the reason", code)
		}
	})
}
