/* mcphub-edge: reads flags and their environment twins, runs the edge library until
 * SIGTERM or SIGINT, then stops it cleanly. Everything else lives in edge.c. */
#include "edge.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mcphub-edge [--listen ADDR] [--control ADDR] [--edge-id NAME] [OPTIONS]\n"
            "\n"
            "Serves MCP clients over HTTP and hands their requests to mcphub-control.\n"
            "\n"
            "  --listen ADDR    HTTP listen address, IPv4 HOST:PORT; port 0 picks a free port,\n"
            "                   logged as \"edge listening addr=HOST:PORT\".\n"
            "                   Env MCPHUB_LISTEN. Default %s.\n"
            "  --control ADDR   gRPC address of mcphub-control's Gateway service.\n"
            "                   Env MCPHUB_CONTROL. Default %s.\n"
            "  --edge-id NAME   this edge's name in control's logs and lists (1-%d bytes of\n"
            "                   A-Z a-z 0-9 . _ : @ / + = -).\n"
            "                   Env MCPHUB_EDGE_ID. Default edge-<hostname>-<pid>.\n"
            "  --max-streams N  open GET /mcp and GET /sse streams at once; more get 429.\n"
            "                   Env MCPHUB_MAX_STREAMS. Default %u.\n"
            "  --max-connections N\n"
            "                   HTTP connections at once (each a descriptor: the soft\n"
            "                   RLIMIT_NOFILE is raised to fit, up to the hard limit).\n"
            "                   Env MCPHUB_MAX_CONNECTIONS. Default max streams + %u.\n"
            "  --stream-buffer BYTES\n"
            "                   bytes waiting to be sent on one SSE stream; a client that\n"
            "                   falls further behind is disconnected.\n"
            "                   Env MCPHUB_STREAM_BUFFER. Default %u.\n"
            "  --heartbeat-ms MS\n"
            "                   \": ping\" comment on SSE streams idle this long (below the\n"
            "                   %u s idle connection timeout). Env MCPHUB_HEARTBEAT_MS.\n"
            "                   Default %u.\n"
            "  --sse-retry-ms MS\n"
            "                   retry: field sent in the priming event of 2025-11-25 streams;\n"
            "                   0 sends none. Env MCPHUB_SSE_RETRY_MS. Default 0.\n"
            "  --allowed-hosts LIST\n"
            "                   comma-separated Host values accepted besides localhost,\n"
            "                   127.0.0.1 and [::1] when listening on loopback (a name without\n"
            "                   a port allows every port). Env MCPHUB_ALLOWED_HOSTS.\n"
            "  --drain-ms MS    on SIGTERM: /readyz turns 503, new requests get 503, GET and\n"
            "                   /sse streams close (clients resume on another edge), and calls\n"
            "                   in flight get this long to finish. Env MCPHUB_DRAIN_MS.\n"
            "                   Default 10000. SIGINT stops at once.\n"
            "  --help           print this help and exit.\n"
            "\n"
            "A flag wins over its environment variable. MCPHUB_LOG_LEVEL=error|warn|info|debug\n"
            "sets the log level (default info); logs go to stderr.\n"
            "Endpoints: POST|GET|DELETE /mcp[/ROUTE] (Streamable HTTP), GET /sse[/ROUTE] and\n"
            "POST /messages?sessionId=ID (legacy HTTP+SSE), GET /healthz (process up),\n"
            "GET /readyz (connected to control), GET /metrics (Prometheus; see\n"
            "docs/observability.md). See docs/transports.md.\n"
            "SIGTERM or SIGINT stops the edge cleanly (exit status 0).\n",
            EDGE_DEFAULT_LISTEN, EDGE_DEFAULT_CONTROL, EDGE_ID_MAX, EDGE_DEFAULT_MAX_STREAMS,
            EDGE_SPARE_CONNECTIONS, EDGE_DEFAULT_STREAM_BUFFER, EDGE_DEFAULT_TIMEOUT_S, EDGE_DEFAULT_HEARTBEAT_MS);
}

/* Parses a non-negative number of at most max; 0 or -1 with a message on stderr. */
static int num_opt(const char *name, const char *text, unsigned long max, unsigned long *out)
{
    char *end;

    errno = 0;
    *out = text ? strtoul(text, &end, 10) : 0;
    if (text && (errno || end == text || *end != '\0' || text[0] == '-' || *out > max)) {
        fprintf(stderr, "mcphub-edge: %s wants a number from 0 to %lu, not '%s'\n", name, max,
                text);
        return -1;
    }
    return 0;
}

/* An environment twin; an empty value counts as unset. */
static const char *env_opt(const char *name)
{
    const char *v = getenv(name);

    return v && v[0] ? v : NULL;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"control", required_argument, NULL, 'c'},
        {"edge-id", required_argument, NULL, 'i'},
        {"max-streams", required_argument, NULL, 'm'},
        {"max-connections", required_argument, NULL, 'n'},
        {"stream-buffer", required_argument, NULL, 'b'},
        {"heartbeat-ms", required_argument, NULL, 'p'},
        {"sse-retry-ms", required_argument, NULL, 'r'},
        {"allowed-hosts", required_argument, NULL, 'a'},
        {"drain-ms", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    edge_opts opts = {0};
    const char *max_streams = env_opt("MCPHUB_MAX_STREAMS");
    const char *max_connections = env_opt("MCPHUB_MAX_CONNECTIONS");
    const char *stream_buffer = env_opt("MCPHUB_STREAM_BUFFER");
    const char *heartbeat = env_opt("MCPHUB_HEARTBEAT_MS");
    const char *retry = env_opt("MCPHUB_SSE_RETRY_MS");
    const char *drain = env_opt("MCPHUB_DRAIN_MS");
    unsigned long drain_ms = 10000;
    unsigned long n;
    sigset_t sigs;
    edge *e;
    char err[256];
    int c, sig, rc;

    log_init("edge");
    opts.listen = env_opt("MCPHUB_LISTEN");
    opts.control = env_opt("MCPHUB_CONTROL");
    opts.edge_id = env_opt("MCPHUB_EDGE_ID");
    opts.allowed_hosts = env_opt("MCPHUB_ALLOWED_HOSTS");
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            opts.listen = optarg;
            break;
        case 'c':
            opts.control = optarg;
            break;
        case 'i':
            opts.edge_id = optarg;
            break;
        case 'm':
            max_streams = optarg;
            break;
        case 'n':
            max_connections = optarg;
            break;
        case 'b':
            stream_buffer = optarg;
            break;
        case 'p':
            heartbeat = optarg;
            break;
        case 'r':
            retry = optarg;
            break;
        case 'a':
            opts.allowed_hosts = optarg;
            break;
        case 'd':
            drain = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            fprintf(stderr, "mcphub-edge: option '%s' needs a value (see --help)\n",
                    argv[optind - 1]);
            return 1;
        default:
            fprintf(stderr, "mcphub-edge: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mcphub-edge: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 1;
    }
    if (num_opt("--max-streams", max_streams, 1000000, &n) < 0)
        return 1;
    opts.max_streams = (unsigned)n;
    if (num_opt("--max-connections", max_connections, 1000000, &n) < 0)
        return 1;
    opts.max_connections = (unsigned)n;
    if (num_opt("--stream-buffer", stream_buffer, 1ul << 30, &n) < 0)
        return 1;
    opts.stream_buffer = n;
    if (num_opt("--heartbeat-ms", heartbeat, 3600000, &n) < 0)
        return 1;
    opts.heartbeat_ms = (unsigned)n;
    if (num_opt("--sse-retry-ms", retry, 3600000, &n) < 0)
        return 1;
    if (drain && num_opt("--drain-ms", drain, 3600000, &drain_ms) < 0)
        return 1;
    opts.sse_retry_ms = (unsigned)n;
    if (edge_opts_check(&opts, err, sizeof err) < 0) {
        fprintf(stderr, "mcphub-edge: %s\n", err);
        return 1;
    }

    /* Before any thread exists, so that every thread inherits the mask and only sigwait
     * below ever sees these signals. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!(e = edge_new(&opts)))
        return 1;
    if ((rc = edge_start(e)) < 0) {
        fprintf(stderr, "mcphub-edge: cannot start on %s: %s\n",
                opts.listen ? opts.listen : EDGE_DEFAULT_LISTEN, strerror(-rc));
        edge_free(e);
        return 1;
    }
    while (sigwait(&sigs, &sig) != 0)
        ;
    log_info("shutting down", "signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    /* SIGTERM drains first (calls in flight finish); SIGINT (Ctrl-C) stops at once. */
    if (sig == SIGTERM)
        edge_drain(e, (int)drain_ms);
    edge_free(e);
    return 0;
}
