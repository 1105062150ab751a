/* mcphub-edge: reads flags and their environment twins, runs the edge library until
 * SIGTERM or SIGINT, then stops it cleanly. Everything else lives in edge.c. */
#include "edge.h"
#include "log.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mcphub-edge [--listen ADDR] [--control ADDR] [--edge-id NAME]\n"
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
            "  --help           print this help and exit.\n"
            "\n"
            "A flag wins over its environment variable. MCPHUB_LOG_LEVEL=error|warn|info|debug\n"
            "sets the log level (default info); logs go to stderr.\n"
            "Endpoints: GET /healthz (process up), GET /readyz (connected to control).\n"
            "SIGTERM or SIGINT stops the edge cleanly (exit status 0).\n",
            EDGE_DEFAULT_LISTEN, EDGE_DEFAULT_CONTROL, EDGE_ID_MAX);
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
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    edge_opts opts = {0};
    sigset_t sigs;
    edge *e;
    char err[256];
    int c, sig, rc;

    log_init("edge");
    opts.listen = env_opt("MCPHUB_LISTEN");
    opts.control = env_opt("MCPHUB_CONTROL");
    opts.edge_id = env_opt("MCPHUB_EDGE_ID");
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
    edge_free(e);
    return 0;
}
