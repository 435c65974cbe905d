/* "Hello, world!" with libfcgi (Debian libfcgi-dev), threaded: THREADS
 * threads each accepting on the listening socket given as argv[1] (a Unix
 * socket path), the way libfcgi's threaded example works. For the
 * comparison in benches/compare.sh.
 *
 * It reads the request body before answering. libfcgi leaves that to the
 * app: on a kept connection, unread FCGI_STDIN records are what the next
 * FCGX_Accept_r finds where it expects FCGI_BEGIN_REQUEST, and it closes
 * the connection. The other apps' libraries drain the body themselves. */
#include <fcgiapp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int listen_fd;

static void *serve(void *unused) {
    FCGX_Request request;
    char body[16384];
    (void)unused;
    FCGX_InitRequest(&request, listen_fd, 0);
    while (FCGX_Accept_r(&request) == 0) {
        while (FCGX_GetStr(body, sizeof body, request.in) > 0)
            ;
        FCGX_PutS("Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, world!", request.out);
        FCGX_Finish_r(&request);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 2 ? atoi(argv[2]) : 16;
    pthread_t ids[256];
    if (argc < 2) {
        fprintf(stderr, "usage: libfcgi-hello SOCKET [THREADS]\n");
        return 2;
    }
    if (threads < 1 || threads > 256)
        threads = 16;
    FCGX_Init();
    unlink(argv[1]);
    listen_fd = FCGX_OpenSocket(argv[1], 1024);
    if (listen_fd < 0) {
        perror("FCGX_OpenSocket");
        return 1;
    }
    for (int i = 0; i < threads; i++)
        pthread_create(&ids[i], NULL, serve, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(ids[i], NULL);
    return 0;
}
