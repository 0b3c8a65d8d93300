// Plain-loop references of the normalization kernels (norm.c): in double, statistics by definition.
#include "../internal.h"
#include "CKernels.h"

#include <math.h>

void bp_batchnorm_forward_train_ref(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                                    const float *beta, int64_t n, int64_t c, int64_t hw, float eps) {
    for (int64_t ch = 0; ch < c; ch++) {
        double sum = 0.0, sq = 0.0;
        for (int64_t b = 0; b < n; b++)
            for (int64_t i = 0; i < hw; i++) sum += x[(b * c + ch) * hw + i];
        double mu = sum / (double)(n * hw);
        for (int64_t b = 0; b < n; b++)
            for (int64_t i = 0; i < hw; i++) sq += (x[(b * c + ch) * hw + i] - mu) * (x[(b * c + ch) * hw + i] - mu);
        double r = 1.0 / sqrt(sq / (double)(n * hw) + eps);
        bp_split_mean(mu, mean + 2 * ch);
        rstd[ch] = (float)r;
        for (int64_t b = 0; b < n; b++)
            for (int64_t i = 0; i < hw; i++) {
                int64_t e = (b * c + ch) * hw + i;
                y[e] = (float)((x[e] - mu) * r * (gamma ? gamma[ch] : 1.0) + (beta ? beta[ch] : 0.0));
            }
    }
}

void bp_batchnorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                               const float *gamma, int64_t n, int64_t c, int64_t hw, float eps, int batch_statistics,
                               const float *running_mean, const float *running_var) {
    for (int64_t ch = 0; ch < c; ch++) {
        double mu, var, count = (double)(n * hw);
        if (batch_statistics) {
            double sum = 0.0, sq = 0.0;
            for (int64_t b = 0; b < n; b++)
                for (int64_t i = 0; i < hw; i++) sum += x[(b * c + ch) * hw + i];
            mu = sum / count;
            for (int64_t b = 0; b < n; b++)
                for (int64_t i = 0; i < hw; i++) sq += pow(x[(b * c + ch) * hw + i] - mu, 2);
            var = sq / count;
        } else {
            mu = running_mean[ch], var = running_var[ch];
        }
        double r = 1.0 / sqrt(var + eps), g = gamma ? gamma[ch] : 1.0, sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int64_t b = 0; b < n; b++)
            for (int64_t i = 0; i < hw; i++) {
                int64_t e = (b * c + ch) * hw + i;
                sum_dy += dy[e];
                sum_dy_xhat += dy[e] * (x[e] - mu) * r;
            }
        if (dbeta) dbeta[ch] += (float)sum_dy;
        if (dgamma) dgamma[ch] += (float)sum_dy_xhat;
        for (int64_t b = 0; b < n; b++)
            for (int64_t i = 0; i < hw; i++) {
                int64_t e = (b * c + ch) * hw + i;
                double xhat = (x[e] - mu) * r;
                dx[e] = (float)(batch_statistics ? g * r * (dy[e] - sum_dy / count - xhat * sum_dy_xhat / count)
                                                 : g * r * dy[e]);
            }
    }
}

void bp_layernorm_forward_ref(float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta,
                              int64_t rows, int64_t d, float eps) {
    for (int64_t row = 0; row < rows; row++) {
        double sum = 0.0, sq = 0.0;
        for (int64_t j = 0; j < d; j++) sum += x[row * d + j];
        double mu = sum / (double)d;
        for (int64_t j = 0; j < d; j++) sq += pow(x[row * d + j] - mu, 2);
        double r = 1.0 / sqrt(sq / (double)d + eps);
        bp_split_mean(mu, mean + 2 * row);
        rstd[row] = (float)r;
        for (int64_t j = 0; j < d; j++)
            y[row * d + j] = (float)((x[row * d + j] - mu) * r * (gamma ? gamma[j] : 1.0) + (beta ? beta[j] : 0.0));
    }
}

void bp_layernorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                               const float *gamma, int64_t rows, int64_t d, float eps) {
    for (int64_t row = 0; row < rows; row++) {
        const float *xr = x + row * d, *dr = dy + row * d;
        double sum = 0.0, sq = 0.0;
        for (int64_t j = 0; j < d; j++) sum += xr[j];
        double mu = sum / (double)d;
        for (int64_t j = 0; j < d; j++) sq += pow(xr[j] - mu, 2);
        double r = 1.0 / sqrt(sq / (double)d + eps), sum_g = 0.0, sum_g_xhat = 0.0;
        for (int64_t j = 0; j < d; j++) {
            double xhat = (xr[j] - mu) * r, g = dr[j] * (gamma ? gamma[j] : 1.0);
            sum_g += g, sum_g_xhat += g * xhat;
            if (dgamma) dgamma[j] += (float)(dr[j] * xhat);
            if (dbeta) dbeta[j] += dr[j];
        }
        for (int64_t j = 0; j < d; j++) {
            double xhat = (xr[j] - mu) * r;
            dx[row * d + j] =
                (float)(r * (dr[j] * (gamma ? gamma[j] : 1.0) - sum_g / (double)d - xhat * sum_g_xhat / (double)d));
        }
    }
}
